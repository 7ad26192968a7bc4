// The predictions' plain-PNG fast path gives the very pixels training's decodeImageToShape gives (sharp):
// encoder-made and hand-made PNGs with every row filter, gray and RGB, to the model's channels; anything
// the fast path does not take (alpha, palette, 16-bit, interlaced, a colour profile, a damaged CRC) falls
// back to sharp; libvips' RGB-to-gray table equals its conversion on random pixels.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { test } from 'node:test'
import { crc32, deflateSync } from 'node:zlib'
import sharp from 'sharp'
import { convertRawImage, decodeImageToShape, type ImageShape } from '../../src/datasets/image.js'
import { decodePlainPng, grayTable, plainPngToShape } from '../../src/inference/plain-png.js'

const MAX = 4096 * 4096

async function fastPath(png: Buffer, shape: ImageShape): Promise<Uint8Array | null> {
  const plain = decodePlainPng(png, MAX)
  if (!plain) return null
  return (await plainPngToShape(plain, shape)) ?? (await convertRawImage(plain, shape))
}

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8)
  head.writeUInt32BE(data.length, 0)
  head.write(type, 4, 'latin1')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0)
  return Buffer.concat([head, data, crc])
}

/** A PNG encoded here with the given filter on each row (cycling 0-4), to cover what encoders rarely pick. */
function handMadePng(width: number, height: number, channels: 1 | 3, pixels: Uint8Array, extra: Buffer[] = []) {
  const stride = width * channels
  const raw = Buffer.alloc(height * (stride + 1))
  for (let y = 0; y < height; y++) {
    const f = y % 5
    raw[y * (stride + 1)] = f
    for (let i = 0; i < stride; i++) {
      const x = pixels[y * stride + i]
      const a = i >= channels ? pixels[y * stride + i - channels] : 0
      const b = y ? pixels[(y - 1) * stride + i] : 0
      const c = i >= channels && y ? pixels[(y - 1) * stride + i - channels] : 0
      const p = a + b - c
      const pa = Math.abs(p - a)
      const pb = Math.abs(p - b)
      const pc = Math.abs(p - c)
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][f]
      raw[y * (stride + 1) + 1 + i] = (x - pred) & 255
    }
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr[8] = 8
  ihdr[9] = channels === 1 ? 0 : 2
  const z = deflateSync(raw)
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...extra,
    chunk('IDAT', z.subarray(0, z.length >> 1)),
    chunk('IDAT', z.subarray(z.length >> 1)),
    chunk('IEND', Buffer.alloc(0)),
  ])
}

const SHAPES: ImageShape[] = [
  [28, 28, 1],
  [28, 28, 3],
  [17, 23, 1],
  [40, 32, 3],
]

test('plain PNGs decode to the pixels decodeImageToShape gives, for every shape', async () => {
  const cases: { name: string; png: Buffer }[] = []
  for (const [w, h] of [
    [28, 28],
    [23, 17],
    [61, 45],
  ])
    for (const channels of [1, 3] as const) {
      const pixels = randomBytes(w * h * channels)
      cases.push({ name: `hand-made ${w}x${h}x${channels}`, png: handMadePng(w, h, channels, pixels) })
      cases.push({
        name: `hand-made ${w}x${h}x${channels} with text`,
        png: handMadePng(w, h, channels, pixels, [chunk('tEXt', Buffer.from('Comment\0refit'))]),
      })
      for (const adaptiveFiltering of [false, true])
        cases.push({
          name: `sharp ${w}x${h}x${channels} adaptive=${adaptiveFiltering}`,
          png: await sharp(pixels, { raw: { width: w, height: h, channels } })
            .toColourspace(channels === 1 ? 'b-w' : 'srgb')
            .png({ adaptiveFiltering, compressionLevel: 9 })
            .toBuffer(),
        })
    }
  let taken = 0
  for (const { name, png } of cases) {
    const plain = decodePlainPng(png, MAX)
    if (plain) taken++
    for (const shape of SHAPES) {
      const want = await decodeImageToShape(png, shape, MAX)
      const got = await fastPath(png, shape)
      assert.ok(got, `${name}: taken by the fast path`)
      assert.ok(Buffer.from(got).equals(Buffer.from(want)), `${name} -> ${shape.join('x')}`)
    }
  }
  assert.equal(taken, cases.length)
})

test('PNGs the fast path does not take fall back to sharp', async () => {
  const px = randomBytes(20 * 20 * 4)
  const rgba = await sharp(px, { raw: { width: 20, height: 20, channels: 4 } })
    .png()
    .toBuffer()
  const palette = await sharp(px, { raw: { width: 20, height: 20, channels: 4 } })
    .removeAlpha()
    .png({ palette: true })
    .toBuffer()
  const deep = await sharp(px, { raw: { width: 20, height: 20, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer()
  const interlaced = await sharp(px, { raw: { width: 20, height: 20, channels: 3 } })
    .png({ progressive: true })
    .toBuffer()
  const profile = await sharp(px, { raw: { width: 20, height: 20, channels: 3 } })
    .withIccProfile('p3')
    .png()
    .toBuffer()
  const good = handMadePng(20, 20, 3, px.subarray(0, 1200))
  const badCrc = Buffer.from(good)
  badCrc[good.length - 20] ^= 1
  const truncated = good.subarray(0, good.length - 12)
  const gama = handMadePng(20, 20, 3, px.subarray(0, 1200), [chunk('gAMA', Buffer.from([0, 0, 0xb1, 0x8f]))])
  for (const [name, png] of Object.entries({ rgba, palette, deep, interlaced, profile, badCrc, truncated, gama }))
    assert.equal(decodePlainPng(png, MAX), null, name)
  assert.ok(decodePlainPng(good, MAX))
  assert.equal(decodePlainPng(good, 399), null, 'more pixels than allowed')
})

test("the RGB-to-gray table is libvips' own conversion", async () => {
  const lut = await grayTable()
  const px = randomBytes(300 * 200 * 3)
  const want = await sharp(px, { raw: { width: 300, height: 200, channels: 3 } })
    .toColourspace('b-w')
    .raw()
    .toBuffer()
  for (let i = 0; i < want.length; i++)
    assert.equal(lut[(px[i * 3] << 16) | (px[i * 3 + 1] << 8) | px[i * 3 + 2]], want[i], `pixel ${i}`)
})

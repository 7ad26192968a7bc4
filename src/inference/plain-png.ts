// Predictions' fast path for the commonest small input, a plain 8-bit gray or RGB PNG: decoded here, on the
// inference process's main thread, instead of three sharp calls (metadata, decode, colour conversion), each a
// round trip through libuv's thread pool and a large options object marshalled into native code. On a busy
// 2-core machine those hops were most of an mnist-cnn prediction (decode 3-5 ms of a 5 ms forward).
//
// The pixels must be the very ones decodeImageToShape (training's path) gives, so the fast path takes only
// PNGs whose decoding is fixed by the format: 8-bit, gray or RGB, no alpha, not interlaced, and no chunk
// that libvips could act on (colour profile, gamma, EXIF orientation, transparency); every CRC is checked.
// Anything else returns null and goes through sharp. RGB to gray uses a table libvips itself computed
// (grayTable), because libvips converts through linear light with its own rounding.
import { crc32, inflateSync } from 'node:zlib'
import sharp from 'sharp'
import type { ImageShape, RawImage } from '../datasets/image.js'

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
/** Chunks that carry no pixel semantics for libvips' PNG loader as sharp drives it. */
const INERT = new Set(['tEXt', 'zTXt', 'iTXt', 'tIME', 'pHYs'])

/**
 * The pixels of a plain PNG (see the file comment), row-major, 1 or 3 channels; null when the file is
 * anything else, damaged or larger than `maxPixels` (sharp then decodes it, or names the fault).
 */
export function decodePlainPng(buf: Buffer, maxPixels: number): RawImage | null {
  if (buf.length < 8 + 25 + 12 || !buf.subarray(0, 8).equals(SIGNATURE)) return null
  let width = 0
  let height = 0
  let channels: 1 | 3 = 1
  const idat: Buffer[] = []
  let pos = 8
  let first = true
  let ended = false
  // an inert chunk came after IDAT: a later IDAT would be out of order
  let idatEnded = false
  while (pos + 12 <= buf.length) {
    const len = buf.readUInt32BE(pos)
    const type = buf.toString('latin1', pos + 4, pos + 8)
    const end = pos + 12 + len
    if (end > buf.length) return null
    if (crc32(buf.subarray(pos + 4, pos + 8 + len)) !== buf.readUInt32BE(pos + 8 + len)) return null
    const data = buf.subarray(pos + 8, pos + 8 + len)
    if (first) {
      if (type !== 'IHDR' || len !== 13) return null
      width = data.readUInt32BE(0)
      height = data.readUInt32BE(4)
      const [depth, colour, compression, filter, interlace] = data.subarray(8, 13)
      if (depth !== 8 || (colour !== 0 && colour !== 2) || compression !== 0 || filter !== 0 || interlace !== 0)
        return null
      channels = colour === 0 ? 1 : 3
      first = false
    } else if (type === 'IDAT') {
      // IDAT chunks must be consecutive
      if (idat.length && idatEnded) return null
      idat.push(data)
    } else if (type === 'IEND') {
      ended = end === buf.length && len === 0
      break
    } else if (INERT.has(type)) {
      if (idat.length) idatEnded = true
    } else {
      return null
    }
    pos = end
  }
  if (!ended || !idat.length || width < 1 || height < 1 || width * height > maxPixels) return null
  let raw: Buffer
  try {
    raw = inflateSync(idat.length === 1 ? idat[0] : Buffer.concat(idat))
  } catch {
    return null
  }
  const stride = width * channels
  if (raw.length !== height * (stride + 1)) return null
  const out = Buffer.allocUnsafe(height * stride)
  if (!unfilter(raw, out, height, stride, channels)) return null
  return { data: out, width, height, channels }
}

/** Undoes PNG's per-row filters (bytes per pixel = channels at 8 bits); false on an unknown filter type. */
function unfilter(raw: Buffer, out: Buffer, height: number, stride: number, bpp: number): boolean {
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)]
    const src = y * (stride + 1) + 1
    const dst = y * stride
    const up = dst - stride
    switch (f) {
      case 0:
        raw.copy(out, dst, src, src + stride)
        break
      case 1:
        for (let i = 0; i < stride; i++) out[dst + i] = (raw[src + i] + (i >= bpp ? out[dst + i - bpp] : 0)) & 255
        break
      case 2:
        for (let i = 0; i < stride; i++) out[dst + i] = (raw[src + i] + (y ? out[up + i] : 0)) & 255
        break
      case 3:
        for (let i = 0; i < stride; i++) {
          const a = i >= bpp ? out[dst + i - bpp] : 0
          const b = y ? out[up + i] : 0
          out[dst + i] = (raw[src + i] + ((a + b) >> 1)) & 255
        }
        break
      case 4:
        for (let i = 0; i < stride; i++) {
          const a = i >= bpp ? out[dst + i - bpp] : 0
          const b = y ? out[up + i] : 0
          const c = i >= bpp && y ? out[up + i - bpp] : 0
          const p = a + b - c
          const pa = Math.abs(p - a)
          const pb = Math.abs(p - b)
          const pc = Math.abs(p - c)
          out[dst + i] = (raw[src + i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 255
        }
        break
      default:
        return false
    }
  }
  return true
}

let table: Promise<Uint8Array> | null = null

/**
 * libvips' own sRGB to gray ('b-w') value of every 8-bit RGB colour, indexed by (r << 16) | (g << 8) | b:
 * computed once per process (16 MiB, about 0.2 s) by the very call convertRawImage makes, in 16 slices.
 */
export function grayTable(): Promise<Uint8Array> {
  table ??= (async () => {
    const lut = new Uint8Array(1 << 24)
    const slice = 1 << 20
    const rgb = Buffer.allocUnsafe(slice * 3)
    for (let base = 0; base < 1 << 24; base += slice) {
      for (let i = 0; i < slice; i++) {
        const v = base + i
        rgb[i * 3] = v >> 16
        rgb[i * 3 + 1] = (v >> 8) & 255
        rgb[i * 3 + 2] = v & 255
      }
      const gray = await sharp(rgb, { raw: { width: 1024, height: 1024, channels: 3 } })
        .toColourspace('b-w')
        .raw()
        .toBuffer()
      if (gray.length !== slice) throw new Error(`gray table: libvips answered ${gray.length} values`)
      lut.set(gray, base)
    }
    return lut
  })()
  table.catch(() => {
    table = null
  })
  return table
}

/**
 * A plain PNG's pixels brought to `shape` as convertRawImage would, when no resize is needed; null when it
 * is (sharp then resizes). Gray to RGB repeats the channel; RGB to gray reads libvips' table.
 */
export async function plainPngToShape(img: RawImage, shape: ImageShape): Promise<Uint8Array | null> {
  const [h, w, c] = shape
  if (img.width !== w || img.height !== h) return null
  const px = w * h
  if (img.channels === c) return new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.byteLength)
  if (img.channels === 1) {
    const rgb = new Uint8Array(px * 3)
    for (let i = 0, j = 0; i < px; i++, j += 3) rgb[j] = rgb[j + 1] = rgb[j + 2] = img.data[i]
    return rgb
  }
  const lut = await grayTable()
  const gray = new Uint8Array(px)
  const d = img.data
  for (let i = 0, j = 0; i < px; i++, j += 3) gray[i] = lut[(d[j] << 16) | (d[j + 1] << 8) | d[j + 2]]
  return gray
}

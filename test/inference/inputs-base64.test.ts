// parseJsonInputs' base64 check: every spelling the alphabet allows is taken (padded or not, base64url,
// a data: URL, line breaks), and the bytes are the image's; a character outside the alphabet is refused.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import sharp from 'sharp'
import { AppError } from '../../src/errors.js'
import { parseJsonInputs } from '../../src/inference/inputs.js'

const spec = { inputShape: [8, 8, 3], classes: 2 }

test('base64 spellings are all taken, and a foreign character is refused', async () => {
  const encoded = await sharp(Buffer.alloc(7 * 7 * 3, 90), { raw: { width: 7, height: 7, channels: 3 } })
    .png()
    .toBuffer()
  // the API checks only the signature: trailing bytes give a length whose base64 needs padding
  const png = Buffer.concat([encoded, Buffer.alloc((encoded.length + 2) % 3 === 0 ? 1 : 2)])
  const b64 = png.toString('base64')
  assert.ok(b64.endsWith('='), 'the fixture needs padding')
  const url = png.toString('base64url')
  const spellings = {
    padded: b64,
    unpadded: b64.replace(/=+$/, ''),
    base64url: url,
    'base64url padded': url + '='.repeat((4 - (url.length % 4)) % 4),
    'data URL': `data:image/png;base64,${b64}`,
    'line breaks': b64.replace(/(.{60})/g, '$1\n'),
  }
  for (const [name, image] of Object.entries(spellings)) {
    const parsed = parseJsonInputs({ inputs: [{ image }] }, spec)
    assert.equal(parsed.inputs.kind, 'image')
    if (parsed.inputs.kind === 'image') assert.ok(Buffer.from(parsed.inputs.images[0]).equals(png), name)
  }
  for (const image of [`${b64.slice(0, 20)}*${b64.slice(20)}`, `${b64}==`, `${b64.slice(0, 30)}-+${b64.slice(30)}`])
    assert.throws(
      () => parseJsonInputs({ inputs: [{ image }] }, spec),
      (e: unknown) => e instanceof AppError && e.code === 'invalid_input',
      image.slice(0, 40),
    )
})

import sharp from 'sharp'
import { DatasetValidationError } from './errors.js'
import { DEFAULT_DATASET_LIMITS } from './limits.js'

/** [height, width, channels]; channels is 1 (gray) or 3 (RGB). */
export type ImageShape = [number, number, number]

/** Decoded pixels, row-major HWC, before any resizing. */
export interface RawImage {
  data: Buffer
  width: number
  height: number
  channels: 1 | 3
}

// libvips decodes far more formats (SVG, TIFF, PDF with the right build): accept only the two a dataset
// is documented to hold, by content, so a renamed file cannot reach a less hardened decoder.
export function imageKind(buf: Buffer): 'png' | 'jpeg' | undefined {
  if (buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47 && buf.readUInt32BE(4) === 0x0d0a1a0a) return 'png'
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return 'jpeg'
  return undefined
}

function invalid(message: string): DatasetValidationError {
  return new DatasetValidationError('invalid_image', message, [{ message }])
}

/**
 * Decodes a PNG or JPEG to its own size, applying EXIF orientation and flattening transparency onto white
 * (what a viewer shows). The result has 1 channel for grayscale sources and 3 otherwise.
 * Throws `invalid_image` for anything that is not a complete PNG/JPEG within `maxPixels`.
 */
export async function decodeImageNative(
  buf: Buffer,
  maxPixels: number = DEFAULT_DATASET_LIMITS.maxImagePixels,
): Promise<RawImage> {
  if (!imageKind(buf)) throw invalid('the file is not a PNG or JPEG image')
  try {
    const meta = await sharp(buf).metadata()
    if (!meta.width || !meta.height) throw invalid('the image has no size')
    if (meta.width * meta.height > maxPixels) {
      throw invalid(`the image is ${meta.width}x${meta.height} pixels; the limit is ${maxPixels} pixels`)
    }
    // failOn 'error': a truncated image must fail validation, not train on half-grey pixels.
    let pipeline = sharp(buf, { failOn: 'error', limitInputPixels: maxPixels, autoOrient: true }).flatten({
      background: { r: 255, g: 255, b: 255 },
    })
    // flatten() widens gray to sRGB: ask for b-w again so a gray source stays 1 channel. CMYK and other
    // exotic spaces become sRGB.
    const gray = meta.channels !== undefined && meta.channels <= 2
    pipeline = pipeline.toColourspace(gray ? 'b-w' : 'srgb')
    const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true })
    if (info.channels !== 1 && info.channels !== 3) throw invalid(`unsupported channel count ${info.channels}`)
    return { data, width: info.width, height: info.height, channels: info.channels }
  } catch (e) {
    if (e instanceof DatasetValidationError) throw e
    throw invalid(`the image could not be decoded (${(e as Error).message})`)
  }
}

function checkShape(shape: ImageShape): void {
  const [h, w, c] = shape
  if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1 || (c !== 1 && c !== 3)) {
    // A programming error (model metadata), not user data.
    throw new RangeError(`invalid image shape [${shape.join(', ')}]: need positive integers and 1 or 3 channels`)
  }
}

/**
 * Brings decoded pixels to `shape`: bilinear resize that ignores aspect ratio (`fill`), then RGB to gray by
 * luminance (sharp) or gray to RGB by repeating the channel. Returns raw uint8 HWC pixels.
 */
export async function convertRawImage(img: RawImage, shape: ImageShape): Promise<Uint8Array> {
  checkShape(shape)
  const [h, w, c] = shape
  let data: Buffer = img.data
  let channels: number = img.channels
  const resize = img.width !== w || img.height !== h
  if (resize || (channels === 3 && c === 1)) {
    let pipeline = sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    if (resize) pipeline = pipeline.resize(w, h, { fit: 'fill', kernel: 'linear' })
    // libvips widens 1-band raw input to sRGB on output: pin b-w whenever the result should be gray (a gray
    // source, or RGB to gray by luminance), and repeat the channel ourselves below for gray to RGB.
    pipeline = pipeline.toColourspace(channels === 1 || c === 1 ? 'b-w' : 'srgb')
    const out = await pipeline.raw().toBuffer({ resolveWithObject: true })
    data = out.data
    channels = out.info.channels
  }
  if (channels === c) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
  if (channels === 1 && c === 3) {
    const rgb = new Uint8Array(h * w * 3)
    for (let i = 0, j = 0; i < data.length; i++, j += 3) {
      rgb[j] = rgb[j + 1] = rgb[j + 2] = data[i]!
    }
    return rgb
  }
  throw new Error(`image conversion produced ${channels} channels, expected ${c}`)
}

/**
 * Decodes a PNG/JPEG and converts it to `shape` ([h, w, c]) as raw uint8 HWC pixels. Training (loadDataset)
 * and inference both go through here so a model sees identically preprocessed pixels in both.
 */
export async function decodeImageToShape(buf: Buffer, shape: ImageShape, maxPixels?: number): Promise<Uint8Array> {
  checkShape(shape)
  return convertRawImage(await decodeImageNative(buf, maxPixels), shape)
}

import { LabelCounter } from './classes.js'
import { DatasetValidationError, ProblemCollector } from './errors.js'
import type { DatasetLimits } from './limits.js'
import { openSafeZip, readZipEntry, type ZipFileEntry } from './zip.js'

/** IDX magic numbers: two zero bytes, type 0x08 (unsigned byte), number of dimensions. */
export const IDX_IMAGES_MAGIC = 0x00000803
export const IDX_LABELS_MAGIC = 0x00000801

export interface IdxScan {
  labels: LabelCounter
  /** [height, width, 1] */
  shape: [number, number, 1]
  /** pixels of all images, n * h * w bytes, only when asked for */
  pixels?: Buffer
  /** one label byte per image */
  labelBytes: Buffer
}

/** Streams an entry to the end without keeping it: proves it inflates to its declared size. */
async function drainZipEntry(zip: Parameters<typeof readZipEntry>[0], entry: ZipFileEntry['entry']): Promise<number> {
  const stream = await zip.openReadStreamPromise(entry)
  let size = 0
  for await (const chunk of stream as AsyncIterable<Buffer>) size += chunk.length
  return size
}

/**
 * Reads a zip holding one IDX image file (unsigned bytes, dims n, h, w) and one IDX label file (dim n), as
 * MNIST ships. Files are told apart by magic number, not name. Labels become classes ("0".."9" for MNIST).
 */
export async function readIdx(path: string, opts: { limits: DatasetLimits; keepPixels?: boolean }): Promise<IdxScan> {
  const { limits } = opts
  const problems = new ProblemCollector('invalid_idx', 'IDX zip')
  const { zip, files } = await openSafeZip(path, limits, problems)
  try {
    let imageFile: ZipFileEntry | undefined
    let labelFile: ZipFileEntry | undefined
    for (const file of files) {
      let head: Buffer
      try {
        head = await readZipEntry(zip, file.entry, 4)
      } catch (e) {
        problems.add({ entry: file.name, message: `the entry could not be read (${(e as Error).message})` })
        continue
      }
      const magic = head.length === 4 ? head.readUInt32BE(0) : -1
      if (magic === IDX_IMAGES_MAGIC) {
        if (imageFile) problems.add({ entry: file.name, message: `a second IDX image file (first: ${imageFile.name})` })
        else imageFile = file
      } else if (magic === IDX_LABELS_MAGIC) {
        if (labelFile) problems.add({ entry: file.name, message: `a second IDX label file (first: ${labelFile.name})` })
        else labelFile = file
      } else {
        problems.add({
          entry: file.name,
          message:
            'not an unsigned-byte IDX file (magic 0x00000803 for images, 0x00000801 for labels); the zip must hold only those two files',
        })
      }
    }
    if (!imageFile) problems.add({ message: 'the zip has no IDX image file (magic 0x00000803, dimensions n, h, w)' })
    if (!labelFile) problems.add({ message: 'the zip has no IDX label file (magic 0x00000801, dimension n)' })
    problems.throwIfAny()

    // Labels: n bytes after an 8-byte header; small enough to read whole (bounded by maxRows).
    const labelEntry = labelFile!.entry
    if (labelEntry.uncompressedSize > 8 + limits.maxRows) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The IDX label file holds more than ${limits.maxRows} labels, the limit.`,
        [{ entry: labelFile!.name, message: `${labelEntry.uncompressedSize - 8} labels` }],
      )
    }
    const labelBuf = await readZipEntry(zip, labelEntry)
    if (labelBuf.length < 8)
      problems.fail({ entry: labelFile!.name, message: 'the label file is shorter than its header' })
    const nLabels = labelBuf.readUInt32BE(4)
    if (labelBuf.length !== 8 + nLabels) {
      problems.add({
        entry: labelFile!.name,
        message: `the header declares ${nLabels} labels but the file holds ${labelBuf.length - 8}`,
      })
    }

    const imageEntry = imageFile!.entry
    const head = await readZipEntry(zip, imageEntry, 16)
    if (head.length < 16)
      problems.fail({ entry: imageFile!.name, message: 'the image file is shorter than its header' })
    const n = head.readUInt32BE(4)
    const h = head.readUInt32BE(8)
    const w = head.readUInt32BE(12)
    if (h === 0 || w === 0) problems.fail({ entry: imageFile!.name, message: `image size ${h}x${w} is empty` })
    if (h * w > limits.maxImagePixels) {
      problems.fail({
        entry: imageFile!.name,
        message: `images are ${h}x${w} pixels; the limit is ${limits.maxImagePixels}`,
      })
    }
    if (n > limits.maxRows) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The IDX file holds ${n} images; the limit is ${limits.maxRows}.`,
      )
    }
    const expected = 16 + n * h * w
    if (imageEntry.uncompressedSize !== expected) {
      problems.add({
        entry: imageFile!.name,
        message: `the header declares ${n} images of ${h}x${w} (${expected} bytes) but the file holds ${imageEntry.uncompressedSize} bytes`,
      })
    }
    if (n !== nLabels) {
      problems.add({
        entry: imageFile!.name,
        message: `the image file holds ${n} images but the label file ${labelFile!.name} holds ${nLabels} labels; the counts must match`,
      })
    }
    problems.throwIfAny()

    let pixels: Buffer | undefined
    try {
      if (opts.keepPixels) pixels = (await readZipEntry(zip, imageEntry)).subarray(16)
      else await drainZipEntry(zip, imageEntry)
    } catch (e) {
      problems.fail({ entry: imageFile!.name, message: `the entry could not be read (${(e as Error).message})` })
    }

    const labelBytes = labelBuf.subarray(8)
    const labels = new LabelCounter()
    for (const b of labelBytes) labels.add(String(b))
    return { labels, shape: [h, w, 1], pixels, labelBytes }
  } finally {
    zip.close()
  }
}

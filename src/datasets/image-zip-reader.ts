import { LabelCounter } from './classes.js'
import { DatasetValidationError, ProblemCollector } from './errors.js'
import { decodeImageNative, type ImageShape, type RawImage } from './image.js'
import type { DatasetLimits } from './limits.js'
import { openSafeZip, readZipEntry, type ZipFileEntry } from './zip.js'

/** Receives each decoded image in archive order, so loading needs no second decode. */
export type ImageSink = (
  image: RawImage,
  label: string,
  /** position in archive order; calls may complete out of order */
  index: number,
  /** shape of the first image in archive order */
  firstShape: ImageShape,
) => void | Promise<void>

const DECODE_CONCURRENCY = 8

export interface ImageScan {
  labels: LabelCounter
  /** shape of the first image in archive order: the common shape when none is requested */
  firstShape: ImageShape | undefined
}

interface Sample {
  file: ZipFileEntry
  label: string
}

/**
 * Maps archive paths to (class, image). Accepted layouts: `class/image.png`, or the same under one wrapper
 * folder (`dataset/class/image.png`, what zipping a folder produces). Anything else is a problem.
 */
function layoutSamples(files: ZipFileEntry[], problems: ProblemCollector): Sample[] {
  const parts = files.map((f) => f.name.split('/'))
  const top = parts[0]?.[0]
  const wrapped = parts.length > 0 && parts.every((p) => p.length >= 3 && p[0] === top)
  const samples: Sample[] = []
  for (const [i, file] of files.entries()) {
    const rel = wrapped ? parts[i]!.slice(1) : parts[i]!
    if (rel.length === 1) {
      problems.add({ entry: file.name, message: 'the file is not inside a class folder; use class_name/image.png' })
    } else if (rel.length > 2) {
      problems.add({
        entry: file.name,
        message: 'images must sit directly in a class folder (class_name/image.png), not in a subfolder',
      })
    } else samples.push({ file, label: rel[0]! })
  }
  return samples
}

/**
 * Reads a zip of PNG/JPEG images with one folder per class. Every image is fully decoded (so a truncated
 * file fails now, not mid-training); problems are collected (up to 20) and thrown as `invalid_image_zip`.
 */
export async function readImageZip(
  path: string,
  opts: {
    limits: DatasetLimits
    /** called once before the first image with the number of images, so a loader can allocate once */
    onBegin?: (count: number) => void
    onImage?: ImageSink
  },
): Promise<ImageScan> {
  const { limits } = opts
  const problems = new ProblemCollector('invalid_image_zip', 'image zip')
  const { zip, files } = await openSafeZip(path, limits, problems)
  try {
    const samples = layoutSamples(files, problems)
    // Layout problems mean the classes are wrong: report them before spending time decoding.
    problems.throwIfAny()
    if (samples.length > limits.maxRows) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The image zip holds ${samples.length} images; the limit is ${limits.maxRows}.`,
      )
    }
    opts.onBegin?.(samples.length)
    const labels = new LabelCounter(limits)
    let firstShape: ImageShape | undefined

    const decode = async ({ file, label }: Sample, index: number): Promise<void> => {
      let image: RawImage
      try {
        image = await decodeImageNative(await readZipEntry(zip, file.entry), limits.maxImagePixels)
      } catch (e) {
        const message =
          e instanceof DatasetValidationError ? e.message : `the entry could not be read (${(e as Error).message})`
        problems.add({ entry: file.name, message })
        return
      }
      firstShape ??= [image.height, image.width, image.channels]
      labels.add(label)
      // After a problem the file is rejected anyway: stop feeding the loader.
      if (problems.problems.length === 0) await opts.onImage?.(image, label, index, firstShape)
    }

    // The first image alone, so `firstShape` is the first in archive order; then several at a time, since
    // sharp decodes on libuv's thread pool and one at a time leaves cores idle.
    if (samples.length > 0) await decode(samples[0]!, 0)
    for (let start = 1; start < samples.length && !problems.full; start += DECODE_CONCURRENCY) {
      const batch = samples.slice(start, start + DECODE_CONCURRENCY)
      await Promise.all(batch.map((sample, i) => decode(sample, start + i)))
    }
    problems.throwIfAny()
    return { labels, firstShape }
  } finally {
    zip.close()
  }
}

// A few sample images of an image dataset, for the dashboard: picked round-robin over the classes (so every
// class shows up), decoded with the datasets module and re-encoded as small PNGs.
import sharp from 'sharp'
import { ProblemCollector } from '../datasets/errors.js'
import { readIdx } from '../datasets/idx-reader.js'
import { DEFAULT_DATASET_LIMITS, decodeImageNative } from '../datasets/index.js'
import { openSafeZip, readZipEntry } from '../datasets/zip.js'

/** One sample image as PNG. */
export interface SampleImage {
  index: number
  label: string
  width: number
  height: number
  channels: number
  png: Buffer
}

const THUMB_PX = 128

/** Up to `n` indices, taking the next unused sample of each class in turn. */
export function roundRobin(labels: string[], n: number): number[] {
  const byClass = new Map<string, number[]>()
  labels.forEach((label, i) => {
    const list = byClass.get(label) ?? []
    if (list.length < n) list.push(i)
    byClass.set(label, list)
  })
  const classes = [...byClass.keys()].sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
  const picked: number[] = []
  for (let round = 0; picked.length < n; round++) {
    let any = false
    for (const c of classes) {
      const i = byClass.get(c)![round]
      if (i === undefined) continue
      any = true
      picked.push(i)
      if (picked.length === n) break
    }
    if (!any) break
  }
  return picked
}

async function toPng(data: Buffer, width: number, height: number, channels: 1 | 3): Promise<Buffer> {
  let pipeline = sharp(data, { raw: { width, height, channels } })
  if (width > THUMB_PX || height > THUMB_PX)
    pipeline = pipeline.resize(THUMB_PX, THUMB_PX, { fit: 'inside', withoutEnlargement: true })
  return pipeline.png().toBuffer()
}

/** Which samples to show: `n` spread over the classes, or these dataset indices (out-of-range ones skipped). */
export type SamplePick = number | number[]

function pickIndices(labels: string[], pick: SamplePick): number[] {
  if (typeof pick === 'number') return roundRobin(labels, pick)
  return pick.filter((i) => Number.isInteger(i) && i >= 0 && i < labels.length)
}

/** Samples of an IDX zip (grayscale, as MNIST ships). */
export async function idxSamples(path: string, pick: SamplePick): Promise<SampleImage[]> {
  const scan = await readIdx(path, { limits: { ...DEFAULT_DATASET_LIMITS }, keepPixels: true })
  const [h, w] = scan.shape
  const labels = Array.from(scan.labelBytes, (b) => String(b))
  const out: SampleImage[] = []
  for (const i of pickIndices(labels, pick)) {
    const pixels = Buffer.from(scan.pixels!.subarray(i * h * w, (i + 1) * h * w))
    out.push({ index: i, label: labels[i]!, width: w, height: h, channels: 1, png: await toPng(pixels, w, h, 1) })
  }
  return out
}

/** Samples of a zip of class folders; only the picked entries are decoded. */
export async function imageZipSamples(path: string, pick: SamplePick): Promise<SampleImage[]> {
  const problems = new ProblemCollector('invalid_image_zip', 'image zip')
  const { zip, files } = await openSafeZip(path, { ...DEFAULT_DATASET_LIMITS }, problems)
  try {
    // The same layouts the reader accepts: class/image.png, optionally under one wrapper folder.
    const parts = files.map((f) => f.name.split('/'))
    const top = parts[0]?.[0]
    const wrapped = parts.length > 0 && parts.every((p) => p.length >= 3 && p[0] === top)
    const labels = parts.map((p) => (wrapped ? p.slice(1) : p)).map((p) => (p.length === 2 ? p[0]! : ''))
    const usable = labels.map((l, i) => (l ? i : -1)).filter((i) => i >= 0)
    // A valid dataset has every entry in a class folder, so entry order is dataset row order.
    const picked =
      typeof pick === 'number'
        ? roundRobin(
            usable.map((i) => labels[i]!),
            pick,
          ).map((k) => usable[k]!)
        : pick.filter((i) => Number.isInteger(i) && i >= 0 && i < files.length && labels[i])
    const out: SampleImage[] = []
    for (const i of picked) {
      const img = await decodeImageNative(await readZipEntry(zip, files[i]!.entry))
      out.push({
        index: i,
        label: labels[i]!,
        width: img.width,
        height: img.height,
        channels: img.channels,
        png: await toPng(img.data, img.width, img.height, img.channels),
      })
    }
    return out
  } finally {
    zip.close()
  }
}

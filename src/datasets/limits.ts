/** Upper bounds that keep one upload from exhausting the server's memory or disk. */
export interface DatasetLimits {
  /** samples (CSV/JSONL lines, images, IDX items) */
  maxRows: number
  /** numeric features per tabular row */
  maxFeatures: number
  /** entries in a zip, directories included (zip bombs use many tiny entries too) */
  maxZipEntries: number
  /** sum of the declared uncompressed sizes of the zip's entries */
  maxUncompressedBytes: number
  /** width * height of one image (MAX_IMAGE_PIXELS) */
  maxImagePixels: number
  /** bytes in one CSV/JSONL line */
  maxLineBytes: number
  /**
   * uncompressed / compressed size of one zip entry (checked from 1 MiB uncompressed up). Images and IDX
   * compress 1-10x; a zip bomb 1000x and more.
   */
  maxCompressionRatio: number
  /** distinct labels (MAX_CLASSES): list answers and model heads stay bounded */
  maxClasses: number
  /** characters in one label (MAX_LABEL_CHARS) */
  maxLabelChars: number
}

/**
 * Defaults. maxRows is sized for MNIST-like sets (70k) with ample room; loading is in memory, so a
 * deployment with little RAM should lower it (1M rows of 10k float features would be 40 GB).
 */
export const DEFAULT_DATASET_LIMITS: Readonly<DatasetLimits> = Object.freeze({
  maxRows: 1_000_000,
  maxFeatures: 10_000,
  maxZipEntries: 200_000,
  maxUncompressedBytes: 2 * 1024 ** 3,
  // 1024x1024: a 4096x4096 PNG compresses to a few KB and decodes to 48 MB; presets then shrink images to 128x128
  maxImagePixels: 1024 * 1024,
  maxLineBytes: 1024 ** 2,
  maxCompressionRatio: 100,
  maxClasses: 1000,
  maxLabelChars: 200,
})

export function resolveLimits(limits?: Partial<DatasetLimits>): DatasetLimits {
  return { ...DEFAULT_DATASET_LIMITS, ...limits }
}

/** `shape` scaled down to fit maxSide x maxSide, aspect kept (never scaled up). */
export function fitShape(shape: [number, number, number], maxSide?: number): [number, number, number] {
  if (!maxSide) return shape
  const [h, w, c] = shape
  const f = Math.min(1, maxSide / h, maxSide / w)
  if (f >= 1) return shape
  return [Math.max(1, Math.round(h * f)), Math.max(1, Math.round(w * f)), c]
}

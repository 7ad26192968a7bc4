/** Formats a training file can have. */
export type DatasetFormat = 'csv' | 'jsonl' | 'image_zip' | 'idx'

/** One problem found in a file: where (line, entry or field) and why. */
export interface DatasetProblem {
  /** 1-based line number for CSV/JSONL */
  line?: number
  /** archive entry name for zips */
  entry?: string
  /** column or JSON field */
  field?: string
  message: string
}

/** Summary of a validated dataset, stored on the file object as `stats`. */
export interface DatasetStats {
  rows: number
  /** tabular: number of numeric features per row */
  feature_count?: number
  /** images: [height, width, channels] of the stored samples (all samples share it after validation) */
  image_shape?: [number, number, number]
  /** class names in model output order (numeric sort when all classes are numbers, else string sort) */
  classes: string[]
  /** samples per class, same order as `classes` */
  class_counts: number[]
}

/**
 * A dataset loaded in memory for training. Samples are stored row-major in `x`:
 * tabular: Float32Array of rows * feature_count; images: Uint8Array of rows * h * w * c (raw pixels 0-255).
 */
export interface LoadedDataset {
  kind: 'tabular' | 'image'
  x: Float32Array | Uint8Array
  /** shape of one sample: [features] or [h, w, c] */
  sampleShape: number[]
  /** class index per row into `classes` */
  y: Int32Array
  classes: string[]
  rows: number
}

export interface DatasetOptions {
  /** CSV label column; default `label` */
  labelColumn?: string
  /** images: largest width * height (MAX_IMAGE_PIXELS); default DEFAULT_DATASET_LIMITS.maxImagePixels */
  maxImagePixels?: number
}

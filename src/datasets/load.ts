import { readCsv } from './csv-reader.js'
import { DatasetValidationError } from './errors.js'
import { readIdx } from './idx-reader.js'
import { convertRawImage, type ImageShape } from './image.js'
import { readImageZip } from './image-zip-reader.js'
import { readJsonl } from './jsonl-reader.js'
import { type DatasetLimits, fitShape, resolveLimits } from './limits.js'
import type { DatasetFormat, DatasetOptions, LoadedDataset } from './types.js'
import { assertFormat } from './validate.js'

/** Options of loadDataset. */
export interface LoadOptions extends DatasetOptions {
  /** images: resize and convert every image to [h, w, c] (a model's input); default: the first image's shape */
  imageShape?: ImageShape
  /**
   * images without `imageShape`: the first image's shape scaled down (aspect kept) to fit maxSide x maxSide;
   * a preset's network is sized from it, so this bounds its memory
   */
  fitWithin?: number
  limits?: Partial<DatasetLimits>
}

/** Gives each label a dense id in order of first appearance; remapped to sorted class order at the end. */
class LabelIds {
  private readonly ids = new Map<string, number>()
  private readonly names: string[] = []
  private rowIds = new Int32Array(1024)
  rows = 0

  push(label: string): void {
    let id = this.ids.get(label)
    if (id === undefined) {
      id = this.names.length
      this.ids.set(label, id)
      this.names.push(label)
    }
    if (this.rows === this.rowIds.length) {
      const grown = new Int32Array(this.rowIds.length * 2)
      grown.set(this.rowIds)
      this.rowIds = grown
    }
    this.rowIds[this.rows++] = id
  }

  /** Class index per row, for `classes` in model output order. */
  toY(classes: string[]): Int32Array {
    const index = new Map(classes.map((c, i) => [c, i]))
    const remap = this.names.map((n) => index.get(n)!)
    const y = new Int32Array(this.rows)
    for (let i = 0; i < this.rows; i++) y[i] = remap[this.rowIds[i]!]!
    return y
  }
}

/** A Float32Array that doubles as rows stream in, since a streamed CSV's row count is unknown up front. */
class FloatRows {
  private data: Float32Array
  length = 0

  constructor(private readonly width: number) {
    this.data = new Float32Array(Math.max(1, width) * 1024)
  }

  push(row: ArrayLike<number>): void {
    if (this.length + this.width > this.data.length) {
      const grown = new Float32Array(this.data.length * 2)
      grown.set(this.data)
      this.data = grown
    }
    for (let i = 0; i < this.width; i++) this.data[this.length + i] = row[i]!
    this.length += this.width
  }

  toArray(): Float32Array {
    return this.data.slice(0, this.length)
  }
}

async function loadTabular(
  path: string,
  format: 'csv' | 'jsonl',
  opts: LoadOptions,
  limits: DatasetLimits,
): Promise<LoadedDataset> {
  const labels = new LabelIds()
  let rows: FloatRows | undefined
  const onRow = (features: ArrayLike<number>, label: string) => {
    rows ??= new FloatRows(features.length)
    rows.push(features)
    labels.push(label)
  }
  const scan =
    format === 'csv'
      ? await readCsv(path, { limits, labelColumn: opts.labelColumn, onRow })
      : await readJsonl(path, { limits, onRow })
  const { classes, rows: n } = scan.labels.finish(format)
  return {
    kind: 'tabular',
    x: rows!.toArray(),
    sampleShape: [scan.featureCount],
    y: labels.toY(classes),
    classes,
    rows: n,
  }
}

async function loadImageZip(path: string, opts: LoadOptions, limits: DatasetLimits): Promise<LoadedDataset> {
  let labels: string[] = []
  let x: Uint8Array | undefined
  let shape: ImageShape | undefined
  const scan = await readImageZip(path, {
    limits,
    onBegin: (n) => {
      labels = new Array<string>(n)
    },
    onImage: async (image, label, index, firstShape) => {
      // Without a requested shape the first image sets it and the others are resized to match.
      shape ??= opts.imageShape ?? fitShape(firstShape, opts.fitWithin)
      const size = shape[0] * shape[1] * shape[2]
      x ??= new Uint8Array(labels.length * size)
      const pixels = await convertRawImage(image, shape)
      x.set(pixels, index * size)
      labels[index] = label
    },
  })
  const { classes, rows } = scan.labels.finish('image_zip')
  if (!x || !shape) throw new DatasetValidationError('empty_dataset', 'The image zip has no images.')
  const index = new Map(classes.map((c, i) => [c, i]))
  const y = Int32Array.from(labels, (l) => index.get(l)!)
  return { kind: 'image', x, sampleShape: [...shape], y, classes, rows }
}

async function loadIdx(path: string, opts: LoadOptions, limits: DatasetLimits): Promise<LoadedDataset> {
  const scan = await readIdx(path, { limits, keepPixels: true })
  const { classes, rows } = scan.labels.finish('idx')
  const [h, w] = scan.shape
  const pixels = scan.pixels!
  const shape = opts.imageShape ?? fitShape(scan.shape, opts.fitWithin)
  let x: Uint8Array
  if (shape[0] === h && shape[1] === w && shape[2] === 1) {
    x = new Uint8Array(pixels)
  } else {
    const size = shape[0] * shape[1] * shape[2]
    x = new Uint8Array(rows * size)
    for (let i = 0; i < rows; i++) {
      const data = pixels.subarray(i * h * w, (i + 1) * h * w)
      x.set(await convertRawImage({ data, width: w, height: h, channels: 1 }, shape), i * size)
    }
  }
  const index = new Map(classes.map((c, i) => [c, i]))
  const y = Int32Array.from(scan.labelBytes, (b) => index.get(String(b))!)
  return { kind: 'image', x, sampleShape: [...shape], y, classes, rows }
}

/**
 * Loads a dataset in memory for training, checking it as validateDataset does (a file may have been
 * validated by an older version, so nothing is trusted). Tabular rows become a Float32Array; images raw
 * uint8 pixels, row-major NHWC, all of one shape. `classes` and `y` follow the validation stats' order.
 */
export async function loadDataset(path: string, format: DatasetFormat, opts: LoadOptions = {}): Promise<LoadedDataset> {
  assertFormat(format)
  const limits = resolveLimits({
    ...(opts.maxImagePixels ? { maxImagePixels: opts.maxImagePixels } : {}),
    ...opts.limits,
  })
  switch (format) {
    case 'csv':
    case 'jsonl':
      return loadTabular(path, format, opts, limits)
    case 'image_zip':
      return loadImageZip(path, opts, limits)
    case 'idx':
      return loadIdx(path, opts, limits)
  }
}

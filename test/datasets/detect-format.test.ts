import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { DatasetValidationError, detectFormat, validateDataset } from '../../src/datasets/index.js'
import { buildZip, idxFile, png, rejectsWith, tempDir, writeZip } from './helpers.js'

test('detectFormat: by content, not by name', async (t) => {
  const dir = await tempDir(t)
  const p = (name: string) => join(dir, name)
  await writeFile(p('data.txt'), 'a,label\n1,x\n')
  assert.equal(await detectFormat(p('data.txt')), 'csv')
  await writeFile(p('data.csv'), '\uFEFF  \n {"features":[1],"label":"a"}\n')
  assert.equal(await detectFormat(p('data.csv')), 'jsonl')
  await writeZip(p('images.bin'), [{ name: 'a/1.png', data: await png(1, 1, 0) }])
  assert.equal(await detectFormat(p('images.bin')), 'image_zip')
  // IDX entries with image-like names: the magic number decides.
  await writeZip(p('idx.zip'), [
    { name: '__MACOSX/._x', data: 'junk' },
    { name: 'a.png', data: idxFile(0x801, [1], [1]) },
    { name: 'b.png', data: idxFile(0x803, [1, 1, 1], [1]) },
  ])
  assert.equal(await detectFormat(p('idx.zip')), 'idx')
  await writeZip(p('empty.zip'), [])
  assert.equal(await detectFormat(p('empty.zip')), 'image_zip')
})

test('detectFormat: binary, non-UTF-8 and empty files are refused', async (t) => {
  const dir = await tempDir(t)
  const p = (name: string) => join(dir, name)
  await writeFile(p('garbage'), Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0xfe, 0x00, 0x01]))
  const e1 = await rejectsWith(detectFormat(p('garbage')), 'unrecognized_format')
  assert.match(e1.message, /neither a zip archive nor UTF-8 text/)
  await writeFile(p('latin1'), Buffer.from('caf\xe9,label\n', 'latin1'))
  await rejectsWith(detectFormat(p('latin1')), 'unrecognized_format')
  await writeFile(p('nul'), Buffer.from('a,b\0c\n'))
  await rejectsWith(detectFormat(p('nul')), 'unrecognized_format')
  await writeFile(p('empty'), '')
  await rejectsWith(detectFormat(p('empty')), 'empty_dataset')
  await writeFile(p('blank'), '\n\n  \n')
  await rejectsWith(validateDataset(p('blank')), 'empty_dataset')
  // Zip magic, then nonsense.
  await writeFile(p('fakezip'), Buffer.concat([Buffer.from('PK\x03\x04'), Buffer.alloc(64, 0xaa)]))
  await rejectsWith(detectFormat(p('fakezip')), 'unrecognized_format')
  await rejectsWith(validateDataset(p('fakezip'), { format: 'image_zip' }), 'invalid_image_zip')
  await rejectsWith(validateDataset(p('fakezip'), { format: 'idx' }), 'invalid_idx')
  await rejectsWith(validateDataset(p('fakezip'), { format: 'csv' }), 'invalid_csv')
  // A format name from an API request that is not ours.
  await rejectsWith(validateDataset(p('blank'), { format: 'parquet' as never }), 'unrecognized_format')
})

/** mulberry32: a seeded generator so a failing fuzz case can be replayed. */
function rng(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

test('fuzz: garbage and corrupted files only ever fail with DatasetValidationError', async (t) => {
  const dir = await tempDir(t)
  const seeds: Buffer[] = [
    Buffer.from('a,b,label\n1,2,x\n3,4,y\n"5",6,x\n'),
    Buffer.from('{"features":[1,2],"label":"a"}\n{"features":[3,4],"label":1}\n'),
    buildZip([
      { name: 'a/1.png', data: await png(3, 3, 9) },
      { name: 'b/1.png', data: await png(3, 3, [1, 2, 3]) },
    ]),
    buildZip([
      { name: 'i', data: idxFile(0x803, [2, 2, 2], Buffer.alloc(8, 1)) },
      { name: 'l', data: idxFile(0x801, [2], [3, 4]) },
    ]),
  ]
  const random = rng(42)
  const formats = [undefined, 'csv', 'jsonl', 'image_zip', 'idx'] as const
  for (let i = 0; i < 300; i++) {
    let buf: Buffer
    if (i % 5 === 0) {
      buf = Buffer.from(Array.from({ length: Math.floor(random() * 300) }, () => Math.floor(random() * 256)))
    } else {
      buf = Buffer.from(seeds[i % seeds.length]!)
      const flips = 1 + Math.floor(random() * 4)
      for (let f = 0; f < flips; f++) buf[Math.floor(random() * buf.length)] = Math.floor(random() * 256)
      if (random() < 0.2) buf = buf.subarray(0, Math.floor(random() * buf.length))
    }
    const path = join(dir, `f${i}`)
    await writeFile(path, buf)
    const format = formats[i % formats.length]
    try {
      await validateDataset(path, { format })
    } catch (e) {
      assert.ok(
        e instanceof DatasetValidationError,
        `case ${i} (format ${format}) threw ${(e as Error).stack}\ninput: ${buf.toString('hex')}`,
      )
      assert.ok(e.details.length <= 20)
    }
  }
})

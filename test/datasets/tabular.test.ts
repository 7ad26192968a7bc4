import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { loadDataset, validateDataset } from '../../src/datasets/index.js'
import { rejectsWith, tempDir } from './helpers.js'

test('CSV: stats, numeric class order, label column anywhere, load', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'a.csv')
  // BOM, CRLF, a quoted cell, a blank line, the label column in the middle, classes "10" and "2".
  await writeFile(path, '\uFEFFx1,label,x2\r\n1,10,2\r\n"3",2,4.5\r\n\r\n-1e1,10,0\r\n')
  const res = await validateDataset(path)
  assert.deepEqual(res, {
    format: 'csv',
    stats: { classes: ['2', '10'], class_counts: [1, 2], rows: 3, feature_count: 2 },
  })
  const ds = await loadDataset(path, 'csv')
  assert.equal(ds.kind, 'tabular')
  assert.ok(ds.x instanceof Float32Array)
  assert.deepEqual([...ds.x], [1, 2, 3, 4.5, -10, 0])
  assert.deepEqual([...ds.y], [1, 0, 1])
  assert.deepEqual(ds.sampleShape, [2])
  assert.deepEqual(ds.classes, ['2', '10'])
  assert.equal(ds.rows, 3)
})

test('CSV: custom label column and string classes', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'a.csv')
  await writeFile(path, 'species,a,b\ncat,1,2\ndog,3,4\nant,5,6\n')
  const { stats } = await validateDataset(path, { format: 'csv', labelColumn: 'species' })
  assert.deepEqual(stats.classes, ['ant', 'cat', 'dog'])
  const ds = await loadDataset(path, 'csv', { labelColumn: 'species' })
  assert.deepEqual([...ds.y], [1, 2, 0])
  await rejectsWith(validateDataset(path, { format: 'csv' }), 'invalid_csv')
})

test('CSV: a non-numeric cell is reported with its line and column', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'bad.csv')
  const lines = ['x1,x2,label', '1,2,a', '1,2,b', '1,2,a', '1,2,b', '1,2,a', '1,abc,b', '1,2,a']
  await writeFile(path, `${lines.join('\n')}\n`)
  const err = await rejectsWith(validateDataset(path), 'invalid_csv')
  assert.deepEqual(err.details, [{ line: 7, field: 'x2', message: '"abc" is not a number' }])
  assert.match(err.message, /line 7, column x2/)
})

test('CSV: several problems are collected, at most 20', async (t) => {
  const dir = await tempDir(t)
  const few = join(dir, 'few.csv')
  await writeFile(few, 'a,label\n1,x\n,y\n1,2,z\n1,\n')
  const err = await rejectsWith(validateDataset(few), 'invalid_csv')
  assert.deepEqual(
    err.details.map((d) => [d.line, d.field]),
    [
      [3, 'a'],
      [4, undefined],
      [5, 'label'],
    ],
  )
  const many = join(dir, 'many.csv')
  await writeFile(many, `a,label\n${'q,x\n'.repeat(30)}`)
  const err2 = await rejectsWith(validateDataset(many), 'invalid_csv')
  assert.equal(err2.details.length, 20)
  assert.deepEqual(err2.details[19], { line: 21, field: 'a', message: '"q" is not a number' })
  assert.match(err2.message, /at least 20 problems/)
})

test('CSV: missing label column, one class, no rows, long line, too many rows', async (t) => {
  const dir = await tempDir(t)
  const p = (name: string) => join(dir, name)
  await writeFile(p('nolabel.csv'), 'a,b\n1,2\n')
  const e1 = await rejectsWith(validateDataset(p('nolabel.csv')), 'invalid_csv')
  assert.equal(e1.details[0]?.field, 'label')
  assert.equal(e1.details[0]?.line, 1)

  await writeFile(p('one.csv'), 'a,label\n1,x\n2,x\n')
  const e2 = await rejectsWith(validateDataset(p('one.csv')), 'too_few_classes')
  assert.match(e2.message, /only one class \("x"\)/)

  await writeFile(p('header.csv'), 'a,label\n')
  await rejectsWith(validateDataset(p('header.csv')), 'empty_dataset')

  await writeFile(p('long.csv'), `a,label\n${'1'.repeat(200)},x\n`)
  const e3 = await rejectsWith(validateDataset(p('long.csv'), { limits: { maxLineBytes: 100 } }), 'invalid_csv')
  assert.deepEqual(e3.details, [{ line: 2, message: 'the line is longer than 100 bytes' }])

  await writeFile(p('rows.csv'), 'a,label\n1,x\n2,y\n3,x\n')
  await rejectsWith(validateDataset(p('rows.csv'), { limits: { maxRows: 2 } }), 'dataset_too_large')

  await writeFile(
    p('latin1.csv'),
    Buffer.concat([Buffer.from('a,label\n1,x\n2,caf'), Buffer.from([0xe9]), Buffer.from('\n')]),
  )
  const e4 = await rejectsWith(validateDataset(p('latin1.csv'), { format: 'csv' }), 'invalid_csv')
  assert.equal(e4.details[0]?.line, 3)
})

test('JSONL: stats and load, numeric and string labels', async (t) => {
  const dir = await tempDir(t)
  const path = join(dir, 'a.jsonl')
  const rows = [
    { features: [1, 2, 3], label: 'b' },
    { features: [4, 5, 6], label: 'a' },
    { features: [0.5, -1, 1e3], label: 'b' },
  ]
  await writeFile(path, `${rows.map((r) => JSON.stringify(r)).join('\n')}\n\n`)
  assert.deepEqual(await validateDataset(path), {
    format: 'jsonl',
    stats: { classes: ['a', 'b'], class_counts: [1, 2], rows: 3, feature_count: 3 },
  })
  const ds = await loadDataset(path, 'jsonl')
  assert.deepEqual([...ds.x], [1, 2, 3, 4, 5, 6, 0.5, -1, 1000])
  assert.deepEqual([...ds.y], [1, 0, 1])

  const num = join(dir, 'n.jsonl')
  await writeFile(num, '{"features":[1],"label":10}\n{"features":[2],"label":9}\n{"features":[3],"label":"9"}\n')
  const { stats } = await validateDataset(num)
  assert.deepEqual(stats.classes, ['9', '10'])
  assert.deepEqual(stats.class_counts, [2, 1])
})

test('JSONL: bad JSON, ragged features, bad values are located', async (t) => {
  const dir = await tempDir(t)
  const badJson = join(dir, 'bad.jsonl')
  await writeFile(badJson, '{"features":[1],"label":"a"}\n{"features":[2],"label":"b"}\n{"features":[3],"label":\n')
  const e1 = await rejectsWith(validateDataset(badJson), 'invalid_jsonl')
  assert.equal(e1.details.length, 1)
  assert.equal(e1.details[0]?.line, 3)
  assert.match(e1.details[0]!.message, /not valid JSON/)

  const ragged = join(dir, 'ragged.jsonl')
  await writeFile(
    ragged,
    '{"features":[1,2],"label":"a"}\n{"features":[1,2,3],"label":"b"}\n{"features":[1],"label":"b"}\n{"features":[1,2],"label":"b"}\n',
  )
  const e2 = await rejectsWith(validateDataset(ragged), 'invalid_jsonl')
  assert.deepEqual(e2.details, [
    { line: 2, field: 'features', message: 'the line has 3 features; line 1 has 2' },
    { line: 3, field: 'features', message: 'the line has 1 features; line 1 has 2' },
  ])

  const values = join(dir, 'values.jsonl')
  await writeFile(
    values,
    '{"features":[1,"2"],"label":"a"}\n[1,2]\n{"features":[1,2]}\n{"features":[1,1e999],"label":"a"}\n',
  )
  const e3 = await rejectsWith(validateDataset(values, { format: 'jsonl' }), 'invalid_jsonl')
  assert.deepEqual(
    e3.details.map((d) => [d.line, d.field]),
    [
      [1, 'features[1]'],
      [2, undefined],
      [3, 'label'],
      [4, 'features[1]'],
    ],
  )
})

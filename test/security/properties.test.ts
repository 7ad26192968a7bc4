// Property-based tests (fast-check, fixed seeds) for the dataset validators and the config parser, and a
// bounded fuzz run of the parsers: whatever the bytes, validation ends in a result or a
// DatasetValidationError, never another exception.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import fc from 'fast-check'
import { ConfigError, loadConfig } from '../../src/config.js'
import { DatasetValidationError, sortClasses, validateDataset } from '../../src/datasets/index.js'
import type { DatasetFormat } from '../../src/datasets/types.js'
import { buildZip, idxFile, png } from '../datasets/helpers.js'

const SEED = 20240607
let dir: string
let n = 0
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'refit-props-'))
})
after(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function validateBytes(bytes: Buffer | string, format?: DatasetFormat) {
  const path = join(dir, `f${n++}`)
  await writeFile(path, bytes)
  try {
    return await validateDataset(path, format ? { format } : {})
  } finally {
    await rm(path, { force: true })
  }
}

const label = fc.stringMatching(/^[a-z]{1,6}$/)
const num = fc.oneof(fc.integer({ min: -1e6, max: 1e6 }), fc.double({ min: -1e6, max: 1e6, noNaN: true }))
/** rows of `k` numbers and a label, with at least two distinct labels */
const table = fc
  .integer({ min: 1, max: 6 })
  .chain((k) =>
    fc.tuple(
      fc.constant(k),
      fc.array(fc.tuple(fc.array(num, { minLength: k, maxLength: k }), label), { minLength: 2, maxLength: 40 }),
    ),
  )
  .filter(([, rows]) => new Set(rows.map(([, l]) => l)).size >= 2)

function expectedStats(rows: [number[], string][]) {
  const counts = new Map<string, number>()
  for (const [, l] of rows) counts.set(l, (counts.get(l) ?? 0) + 1)
  const classes = sortClasses(counts.keys())
  return { rows: rows.length, classes, class_counts: classes.map((c) => counts.get(c)) }
}

test('CSV: any table of numbers with labels validates to its row count, feature count and classes', async () => {
  await fc.assert(
    fc.asyncProperty(table, fc.boolean(), async ([k, rows], crlf) => {
      const nl = crlf ? '\r\n' : '\n'
      const header = [...Array.from({ length: k }, (_, i) => `x${i}`), 'label'].join(',')
      const csv = [header, ...rows.map(([xs, l]) => [...xs.map(String), l].join(','))].join(nl) + nl
      const { format, stats } = await validateBytes(csv)
      assert.equal(format, 'csv')
      assert.deepEqual({ ...stats, feature_count: undefined }, { ...expectedStats(rows), feature_count: undefined })
      assert.equal(stats.feature_count, k)
    }),
    { seed: SEED, numRuns: 60 },
  )
})

test('JSONL: any list of {features, label} validates to its row count, feature count and classes', async () => {
  await fc.assert(
    fc.asyncProperty(table, async ([k, rows]) => {
      const jsonl = rows.map(([xs, l]) => JSON.stringify({ features: xs, label: l })).join('\n')
      const { format, stats } = await validateBytes(jsonl)
      assert.equal(format, 'jsonl')
      assert.equal(stats.feature_count, k)
      assert.equal(stats.rows, rows.length)
      assert.deepEqual(stats.classes, expectedStats(rows).classes)
    }),
    { seed: SEED, numRuns: 60 },
  )
})

test('IDX: any images/labels pair of matching length validates; a count mismatch is invalid_idx', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 2, max: 30 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: -2, max: 2 }),
      async (count, h, w, skew) => {
        const labels = Array.from({ length: count }, (_, i) => i % 3)
        const pixels = Array.from({ length: count * h * w }, (_, i) => (i * 7) % 256)
        const lc = Math.max(0, count + skew)
        const zip = buildZip([
          { name: 'train-images-idx3-ubyte', data: idxFile(0x00000803, [count, h, w], pixels) },
          { name: 'train-labels-idx1-ubyte', data: idxFile(0x00000801, [lc], labels.concat([0, 1]).slice(0, lc)) },
        ])
        if (skew === 0) {
          const { format, stats } = await validateBytes(zip)
          assert.equal(format, 'idx')
          assert.equal(stats.rows, count)
          assert.deepEqual(stats.image_shape, [h, w, 1])
          assert.deepEqual(stats.classes, count === 2 ? ['0', '1'] : ['0', '1', '2'])
        } else {
          await assert.rejects(
            validateBytes(zip),
            (e: unknown) => e instanceof DatasetValidationError && e.code === 'invalid_idx',
          )
        }
      },
    ),
    { seed: SEED, numRuns: 60 },
  )
})

test('sortClasses: a sorted permutation of its input, independent of input order, numeric when all are numbers', () => {
  const labels = fc.uniqueArray(fc.oneof(label, fc.integer({ min: -1000, max: 1000 }).map(String)), { maxLength: 30 })
  fc.assert(
    fc.property(labels, fc.integer(), (ls, shuffleSeed) => {
      const sorted = sortClasses(ls)
      assert.deepEqual([...sorted].sort(), [...ls].sort(), 'a permutation')
      const rotated = ls
        .slice(Math.abs(shuffleSeed) % Math.max(1, ls.length))
        .concat(ls.slice(0, Math.abs(shuffleSeed) % Math.max(1, ls.length)))
      assert.deepEqual(sortClasses(rotated.reverse()), sorted, 'order independent')
      if (ls.length && ls.every((l) => /^-?\d+$/.test(l)))
        for (let i = 1; i < sorted.length; i++) assert.ok(Number(sorted[i - 1]) < Number(sorted[i]))
      else for (let i = 1; i < sorted.length; i++) assert.ok(sorted[i - 1]! < sorted[i]!)
    }),
    { seed: SEED, numRuns: 500 },
  )
})

test('loadConfig: any environment gives a Config or a ConfigError naming the variable, never another error', () => {
  const keys = [
    'PORT',
    'WORKER_CONCURRENCY',
    'MAX_UPLOAD_BYTES',
    'TF_BACKEND',
    'LOG_LEVEL',
    'QUEUE_PREFIX',
    'DATABASE_URL',
    'REDIS_URL',
    'REFIT_ADMIN_TOKEN',
    'STORAGE_QUOTA_BYTES',
    'MAX_CONCURRENT_JOBS',
    'RATE_LIMIT_PER_MINUTE',
    'REQUEST_TIMEOUT_MS',
    'CORS_ORIGINS',
    'MAX_EVENT_LOOP_DELAY_MS',
    'MAX_HEAP_USED_BYTES',
  ]
  const value = fc.oneof(
    fc.string({ maxLength: 20 }),
    fc.nat().map(String),
    fc.constantFrom('-1', '1.5', '1e3', ' 8', 'redis://x', 'https://a.example,http://b:1', 'https://a.example/path'),
  )
  fc.assert(
    fc.property(fc.dictionary(fc.constantFrom(...keys), value), (env) => {
      try {
        const c = loadConfig({ STORAGE_DIR: dir, ...env })
        if (env.PORT && env.PORT !== '') assert.equal(c.port, Number(env.PORT))
        assert.ok(Number.isInteger(c.rateLimitPerMinute) && c.rateLimitPerMinute >= 0)
        for (const o of c.corsOrigins) assert.equal(new URL(o).origin, o)
      } catch (e) {
        assert.ok(e instanceof ConfigError, `not a ConfigError: ${(e as Error)?.stack}`)
        assert.ok(keys.includes(e.variable), e.variable)
        assert.ok(e.message.startsWith(`Invalid configuration: ${e.variable} `))
      }
    }),
    { seed: SEED, numRuns: 2000 },
  )
})

/** Mutations of a valid file: bit flips, byte overwrites, truncation, insertion, duplication. */
const mutated = (seedFile: Buffer) =>
  fc
    .array(
      fc.oneof(
        fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
        fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
        fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
        fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
        fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
      ),
      { minLength: 1, maxLength: 6 },
    )
    .map((ops) => {
      let b = Buffer.from(seedFile)
      for (const o of ops) {
        const at = b.length ? o.at % b.length : 0
        if (o.op === 'flip' && b.length) b[at] = b[at]! ^ (1 << o.bit)
        else if (o.op === 'set' && b.length) b[at] = o.byte
        else if (o.op === 'cut') b = b.subarray(0, at)
        else if (o.op === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from(o.bytes), b.subarray(at)])
        else if (o.op === 'repeat') b = Buffer.concat([b.subarray(0, at + o.len), b.subarray(at)])
      }
      return b
    })

test('fuzz: mutated CSV, JSONL, image zips and IDX zips end in a result or a DatasetValidationError only', async () => {
  const img = await png(4, 4, 100)
  const seeds: [string, Buffer, DatasetFormat | undefined][] = [
    ['csv', Buffer.from('x1,x2,label\n1,2,a\n3,4,b\n"5",6,a\n'), undefined],
    ['jsonl', Buffer.from('{"features":[1,2],"label":"a"}\n{"features":[3,4],"label":"b"}\n'), undefined],
    [
      'image zip',
      buildZip([
        { name: 'a/1.png', data: img },
        { name: 'b/1.png', data: img },
      ]),
      undefined,
    ],
    [
      'idx zip',
      buildZip([
        { name: 'i', data: idxFile(0x00000803, [2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]) },
        { name: 'l', data: idxFile(0x00000801, [2], [0, 1]) },
      ]),
      undefined,
    ],
    ['csv declared', Buffer.from('a,label\n1,x\n2,y\n'), 'csv'],
  ]
  const deadline = Date.now() + 60_000 // bounded: at most a minute in all
  const outcomes: Record<string, number> = { ok: 0 }
  for (const [name, seedFile, format] of seeds) {
    await fc.assert(
      fc.asyncProperty(mutated(seedFile), async (bytes) => {
        try {
          await validateBytes(bytes, format)
          outcomes.ok!++
        } catch (e) {
          if (!(e instanceof DatasetValidationError))
            throw new Error(
              `${name}: untyped ${(e as Error)?.name}: ${(e as Error)?.message} for ${bytes.toString('base64')}`,
            )
          outcomes[e.code] = (outcomes[e.code] ?? 0) + 1
        }
      }),
      { seed: SEED, numRuns: 300, interruptAfterTimeLimit: Math.max(1000, (deadline - Date.now()) / 2) },
    )
  }
  // the run exercised both sides
  assert.ok(outcomes.ok! > 0, JSON.stringify(outcomes))
  assert.ok(Object.keys(outcomes).length > 3, JSON.stringify(outcomes))
})

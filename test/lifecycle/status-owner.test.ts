// The lifecycle module is the only code that writes `fine_tuning_jobs`: a scan of every source file of
// the API, the worker, the CLI and the scripts fails on a write found anywhere else. And the README's
// lifecycle diagram is checked against the transition table, edge by edge.
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'
import { test } from 'node:test'
import { edges } from '../../src/modules/jobs/lifecycle/transitions.js'

const root = join(import.meta.dirname, '../..')
const OWNER = 'src/modules/jobs/lifecycle/'

/** Prisma writes on the job model, or SQL writing its table (`UPDATE fine_tuning_jobs`, `INSERT INTO …`). */
const WRITES = [
  /\bfineTuningJob\s*\.\s*(create|createMany|createManyAndReturn|update|updateMany|updateManyAndReturn|upsert|delete|deleteMany)\s*\(/,
  /\b(update|insert\s+into|delete\s+from)\s+"?fine_tuning_jobs\b/i,
]

function writesJobs(source: string): string[] {
  const out: string[] = []
  for (const [i, line] of source.split('\n').entries())
    if (WRITES.some((re) => re.test(line))) out.push(`${i + 1}: ${line.trim()}`)
  return out
}

/** `a\n  .b(` -> `a.b(`: a chained call split over lines is one statement. */
const joinCalls = (text: string) => text.replace(/\s*\n\s*\./g, '.')

async function* sources(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, e.name)
    if (e.isDirectory()) {
      if (e.name === 'node_modules' || e.name === 'generated') continue
      yield* sources(path)
    } else if (/\.(ts|mts|js|mjs)$/.test(e.name)) yield path
  }
}

test('the detector finds Prisma and SQL writes of the job table (so the scan below can fail)', () => {
  assert.equal(writesJobs(`await db.fineTuningJob.updateMany({ where: {}, data: { status: 'failed' } })`).length, 1)
  assert.equal(writesJobs(joinCalls(`await tx.fineTuningJob\n  .update({`)).length, 1, 'a call split over lines')
  assert.equal(writesJobs('await tx.$executeRaw`UPDATE fine_tuning_jobs SET status = $1`').length, 1)
  assert.equal(writesJobs(`await db.fineTuningJob.findMany({ where: { status: 'queued' } })`).length, 0)
})

test('no file outside the lifecycle module writes fine_tuning_jobs', async () => {
  const offenders: string[] = []
  let scanned = 0
  let ownerWrites = 0
  for (const dir of ['src', 'workers', 'cli', 'scripts']) {
    for await (const path of sources(join(root, dir))) {
      const rel = relative(root, path)
      // joined lines too: a call split across lines (`fineTuningJob\n.update(`) is one statement
      const text = await readFile(path, 'utf8')
      const hits = [...writesJobs(text), ...writesJobs(joinCalls(text)).map((h) => `(joined) ${h}`)]
      scanned++
      if (rel.startsWith(OWNER)) ownerWrites += hits.length
      else if (hits.length) offenders.push(`${rel}\n  ${hits.join('\n  ')}`)
    }
  }
  assert.ok(scanned > 100, `scanned ${scanned} files`)
  assert.ok(ownerWrites > 0, 'the lifecycle module itself is seen writing the table')
  assert.deepEqual(offenders, [], `files other than ${OWNER}* write fine_tuning_jobs`)
})

test("the README's lifecycle diagram is the transition table", async () => {
  const readme = await readFile(join(root, 'README.md'), 'utf8')
  const block = /#### Lifecycle[\s\S]*?```mermaid\n([\s\S]*?)```/.exec(readme)?.[1]
  assert.ok(block, 'a mermaid block under "#### Lifecycle"')
  const drawn = block
    .split('\n')
    .map((l) => /^\s*(\[\*\]|\w+) --> (\w+): (\w+)\s*$/.exec(l))
    .filter((m): m is RegExpExecArray => !!m)
    .map((m) => `${m[1] === '[*]' ? 'null' : m[1]} -> ${m[2]} (${m[3]})`)
  const table = edges().map((e) => `${e.from ?? 'null'} -> ${e.to} (${e.name})`)
  assert.deepEqual([...drawn].sort(), [...table].sort())
})

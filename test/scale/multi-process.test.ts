// Horizontal scale on one machine: two API processes (REFIT_ROLE=api) and two worker processes share one
// PostgreSQL, one Redis and one storage directory. Twenty small jobs, created through both APIs, all
// finish; none runs twice (attempt 1, one "Training started" each); and every stored event of every job
// reaches a live event stream on each API.
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { createDb, type Db } from '../../src/db/client.js'
import { projectRoot } from '../../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { freePort, httpClient } from '../helpers/service.js'
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

const JOBS = 20

interface Api {
  url: string
  child: ChildProcess
  output(): string
}

let env: TestEnv
let db: Db
let work: string
const apis: Api[] = []
const workers: WorkerProcess[] = []

async function startApi(vars: Record<string, string>): Promise<Api> {
  const port = await freePort()
  let out = ''
  const child = spawn(process.execPath, [join(projectRoot, 'dist/src/main.js')], {
    env: { ...process.env, ...vars, REFIT_ROLE: 'api', PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`API exited early:\n${out}`)
      return out.includes('Refit API is running') && (await fetch(`${url}/readyz`)).ok
    },
    60_000,
    'an API process',
  )
  return { url, child, output: () => out }
}

before(async () => {
  env = await createTestEnv('scale', {
    WORKER_HEARTBEAT_MS: '1000',
    RECONCILE_INTERVAL_MS: '2000',
    MAX_CONCURRENT_JOBS: String(JOBS),
    // every job followed on both APIs with the one key: 2 x JOBS live streams
    MAX_STREAMS_PER_KEY: String(2 * JOBS),
    MAX_STREAMS_PER_PROJECT: String(2 * JOBS),
  })
  db = createDb(env.config.databaseUrl, 2)
  work = await mkdtemp(join(tmpdir(), 'refit-scale-'))
  const started = await Promise.all([
    startApi(env.env),
    startApi(env.env),
    startWorkerProcess(env.env),
    startWorkerProcess(env.env),
  ])
  apis.push(started[0] as Api, started[1] as Api)
  workers.push(started[2] as WorkerProcess, started[3] as WorkerProcess)
})

after(async () => {
  for (const w of workers) await w.kill('SIGKILL')
  for (const a of apis) {
    if (a.child.exitCode === null && a.child.signalCode === null) {
      const exited = new Promise((r) => a.child.once('exit', r))
      a.child.kill('SIGKILL')
      await exited
    }
  }
  await db?.$disconnect()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

interface Stream {
  ids: bigint[]
  done: Promise<void>
  abort(): void
}

/** Follows a job's SSE stream until `event: done`, collecting the ids of `event: event` messages. */
function follow(baseUrl: string, key: string, jobId: string): Stream {
  const ctl = new AbortController()
  const ids: bigint[] = []
  const done = (async () => {
    const res = await fetch(`${baseUrl}/v1/fine_tuning/jobs/${jobId}/events?stream=true`, {
      headers: { authorization: `Bearer ${key}` },
      signal: ctl.signal,
    })
    assert.equal(res.status, 200)
    const decoder = new TextDecoder()
    let buf = ''
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true })
      let i = buf.indexOf('\n\n')
      while (i >= 0) {
        const block = buf.slice(0, i)
        buf = buf.slice(i + 2)
        const field = (name: string) =>
          block
            .split('\n')
            .find((l) => l.startsWith(`${name}: `))
            ?.slice(name.length + 2)
        const event = field('event')
        if (event === 'event') ids.push(BigInt(field('id')!))
        if (event === 'done') {
          ctl.abort()
          return
        }
        i = buf.indexOf('\n\n')
      }
    }
  })().catch((err) => {
    if ((err as Error).name !== 'AbortError') throw err
  })
  return { ids, done, abort: () => ctl.abort() }
}

test(`${JOBS} jobs through two APIs and two workers: each runs once, every event reaches both APIs' streams`, async () => {
  const t0 = Date.now()
  const [a, b] = apis.map((api) => httpClient(api.url, ADMIN_TOKEN))
  const project = await a.post('/v1/admin/projects', { name: 'scale' })
  assert.equal(project.status, 201)
  const apiKey = await b.post(`/v1/admin/projects/${project.body.id}/api_keys`, {})
  assert.equal(apiKey.status, 201)
  const key = apiKey.body.key as string
  const clients = apis.map((api) => httpClient(api.url, key))

  // The registry lists both workers, whichever API is asked.
  for (const c of [a, b]) {
    const ws = await c.get('/v1/admin/workers')
    assert.equal(ws.status, 200)
    assert.deepEqual(ws.body.data.map((w: { pid: number }) => w.pid).sort(), workers.map((w) => w.pid).sort())
  }

  const zip = join(work, 'tiny.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 100, out: zip })
  const up = await clients[0].upload('/v1/files', await readFile(zip), 'tiny.zip', { purpose: 'fine-tune' })
  assert.equal(up.status, 201, JSON.stringify(up.body))
  const fileId = up.body.id as string
  await waitFor(
    async () => (await clients[1].get(`/v1/files/${fileId}`)).body.status === 'processed',
    60_000,
    'file validation',
  )

  const jobIds: string[] = []
  const streams: Stream[][] = []
  for (let i = 0; i < JOBS; i++) {
    const res = await clients[i % 2].post('/v1/fine_tuning/jobs', {
      model: 'mnist-cnn',
      training_file: fileId,
      seed: i,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 1, batch_size: 32 } } },
    })
    assert.equal(res.status, 200, JSON.stringify(res.body))
    jobIds.push(res.body.id)
    streams.push(apis.map((api) => follow(api.url, key, res.body.id)))
  }

  const deadline = 150_000
  const timer = setTimeout(() => {
    for (const pair of streams) for (const s of pair) s.abort()
  }, deadline)
  await Promise.all(streams.flat().map((s) => s.done))
  clearTimeout(timer)

  const byWorker = new Map<number, number>()
  for (const [i, id] of jobIds.entries()) {
    const job = await db.fineTuningJob.findUniqueOrThrow({ where: { id } })
    assert.equal(job.status, 'succeeded', `${id}: ${job.errorCode} ${job.errorMessage}`)
    assert.equal(job.attempt, 1, `${id} ran once`)
    byWorker.set(job.workerPid!, (byWorker.get(job.workerPid!) ?? 0) + 1)
    const events = await db.jobEvent.findMany({ where: { jobId: id }, orderBy: { seq: 'asc' } })
    assert.equal(events.filter((e) => e.message.startsWith('Training started')).length, 1, `${id}: one start`)
    const stored = events.map((e) => e.seq)
    for (const [k, s] of streams[i].entries())
      assert.deepEqual(s.ids, stored, `${id}: API ${k} streamed every stored event, in order, once`)
  }
  assert.ok([...byWorker.keys()].every((pid) => workers.some((w) => w.pid === pid)))
  console.log(
    `${JOBS} jobs on 2 APIs + 2 workers in ${((Date.now() - t0) / 1000).toFixed(1)} s; jobs per worker: ${[...byWorker.values()].join(', ')}`,
  )
})

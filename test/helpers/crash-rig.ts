// The set-up of the worker fault-injection tests (test/lifecycle/*worker-crash*.test.ts): an environment with
// short lock and stall timings, an API app (inject only), a project key, two real worker processes, and an
// IDX upload of MNIST digits 5-9 validated and ready to train on.
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv, waitFor } from './env.js'
import { startWorkerProcess, type WorkerProcess } from './worker-process.js'

/** What a crash test works with; `workers` is the live list (a test removes the ones it kills, adds new ones). */
export interface CrashRig {
  env: TestEnv
  app: FastifyInstance
  key: string
  fileId: string
  workers: WorkerProcess[]
  /** GET `url` with the project key, parsed */
  getJson(url: string): Promise<any>
  /** kills every worker still listed, closes the app, removes the environment and the dataset */
  close(): Promise<void>
}

/** `overrides`: settings beyond the short WORKER_LOCK_MS (2 s) and WORKER_STALLED_INTERVAL_MS (1 s). */
export async function startCrashRig(
  name: string,
  opts: { digits: number; overrides?: Record<string, string> },
): Promise<CrashRig> {
  const env = await createTestEnv(name, {
    WORKER_LOCK_MS: '2000',
    WORKER_STALLED_INTERVAL_MS: '1000',
    ...opts.overrides,
  })
  const work = await mkdtemp(join(tmpdir(), `refit-${name}-`))
  const workers: WorkerProcess[] = []
  let app: FastifyInstance | undefined
  const close = async () => {
    for (const w of workers) await w.kill('SIGKILL')
    await app?.close()
    await env.cleanup()
    await rm(work, { recursive: true, force: true })
  }
  try {
    app = await buildTestApp(env.config)
    return await prepare(env, app, work, workers, opts.digits, close)
  } catch (err) {
    // a set-up that failed half way leaves nothing behind
    await close().catch(() => {})
    throw err
  }
}

async function prepare(
  env: TestEnv,
  app: FastifyInstance,
  work: string,
  workers: WorkerProcess[],
  digits: number,
  close: () => Promise<void>,
): Promise<CrashRig> {
  const { key } = await createProjectKey(app)
  workers.push(...(await Promise.all([startWorkerProcess(env.env), startWorkerProcess(env.env)])))
  const getJson = async (url: string) => (await app.inject({ method: 'GET', url, headers: bearer(key) })).json()
  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: digits, out })
  const body = multipart({ purpose: 'fine-tune' }, { name: 'digits.zip', content: await readFile(out) })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  const fileId = up.json().id as string
  await waitFor(async () => (await getJson(`/v1/files/${fileId}`)).status === 'processed', 60_000, 'file validation')
  return { env, app, key, fileId, workers, getJson, close }
}

// The feature cache across jobs, with a real worker process, PostgreSQL and storage: a first transfer job
// computes and stores its features; a second job on the same file and base trains from them without reading
// the dataset (its bytes are made unreadable meanwhile) and reaches the very same metrics and predictions; a
// corrupt entry is never used but rebuilt; eviction is least recently used; deleting the file deletes its
// features; cached bytes count toward the project's storage usage.
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { selectBackend } from '../../src/engine/backend.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel } from '../../src/engine/model-io.js'
import type { Tf } from '../../src/engine/tf.js'
import { backboneSha256, evictFeatures, featurePath } from '../../src/modules/features/feature-cache-service.js'
import { storageUsed } from '../../src/modules/limits/limits-service.js'
import { StorageReservation } from '../../src/modules/limits/storage-reservation.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { createTransferJob, uploadDigits, waitForTerminal } from '../helpers/jobs.js'
import { auditProjectStorage } from '../helpers/storage-audit.js'
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let env: TestEnv
let app: FastifyInstance
let key: string
let projectId: string
let fileId: string
let work: string
let worker: WorkerProcess
const HP = { n_epochs: 3, batch_size: 32 }

before(async () => {
  env = await createTestEnv('feature_cache')
  app = await buildTestApp(env.config)
  ;({ key, projectId } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-features-'))
  worker = await startWorkerProcess(env.env)
  fileId = await uploadDigits(app, key, work, 300)
})

after(async () => {
  await worker?.kill('SIGKILL')
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

async function runJob() {
  const job = await createTransferJob(app, key, fileId, HP)
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  const events = await app.db.jobEvent.findMany({ where: { jobId: job.id }, orderBy: { seq: 'asc' } })
  const metrics = await app.db.metric.findMany({
    where: { jobId: job.id },
    orderBy: [{ step: 'asc' }, { name: 'asc' }],
  })
  const model = await app.db.model.findFirst({ where: { jobId: job.id }, include: { artifact: true } })
  return {
    id: job.id as string,
    messages: events.map((e) => e.message),
    metrics: metrics.map((m) => [m.epoch, m.name, m.value]),
    modelDir: await app.storage.localPath(model!.artifact!.path),
  }
}

const entries = () => app.db.featureCacheEntry.findMany({ where: { fileId } })
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

let first: Awaited<ReturnType<typeof runJob>>

test('a first transfer job computes its features and stores them, verified by sha256', async () => {
  first = await runJob()
  assert.ok(
    first.messages.some((m) => m.startsWith('computed backbone features for 300 samples')),
    first.messages.join('\n'),
  )
  assert.ok(
    first.messages.some((m) => m.startsWith('training features cached')),
    first.messages.join('\n'),
  )
  const rows = await entries()
  assert.equal(rows.length, 1)
  assert.equal(rows[0].rows, 300)
  const bytes = await readFile(await app.storage.localPath(rows[0].path))
  assert.equal(bytes.length, Number(rows[0].bytes))
  assert.equal(sha(bytes), rows[0].sha256)
  // 300 x 4608 float32 features of mnist-cnn's flatten layer, plus labels and a header
  assert.ok(bytes.length > 300 * 4608 * 4)
  // keyed by how the worker computed them (tensorflow, frozen graph): another backend or the eager path
  // (REFIT_FROZEN_GRAPH=off) looks for another entry and never trains on these
  const base = join(app.storage.workPath('models'), 'mnist-cnn')
  const keyFor = (backend: string, mode: 'auto' | 'off') => backboneSha256(base, 'flatten', featurePath(backend, mode))
  assert.equal(rows[0].backboneSha256, await keyFor('tensorflow', 'auto'))
  const others = [await keyFor('tensorflow', 'off'), await keyFor('wasm', 'auto'), await keyFor('cpu', 'auto')]
  assert.equal(new Set([rows[0].backboneSha256, ...others]).size, 4)
})

test('a second job is served from the cache: the dataset is not read, metrics and predictions are identical', async () => {
  const file = await app.db.file.findUniqueOrThrow({ where: { id: fileId } })
  const datasetPath = await app.storage.localPath(file.storagePath!)
  const original = await readFile(datasetPath)
  // were the images decoded, this job would fail on these bytes
  await writeFile(datasetPath, Buffer.from('not a zip any more'))
  let second: Awaited<ReturnType<typeof runJob>>
  try {
    second = await runJob()
  } finally {
    await writeFile(datasetPath, original)
  }
  assert.ok(
    second.messages.some((m) => m === 'features from cache for 300 samples: no image decoded, backbone not loaded'),
    second.messages.join('\n'),
  )
  assert.ok(!second.messages.some((m) => m.startsWith('computed')), second.messages.join('\n'))
  assert.ok(!second.messages.some((m) => m.startsWith('loaded ')), 'the dataset was loaded')
  assert.deepEqual(second.metrics, first.metrics)

  // the composed whole model (base files + head) predicts what the first job's model predicts
  const { tf } = await selectBackend('auto')
  const t = tf as Tf
  const [a, b] = [await loadModel(t, first.modelDir), await loadModel(t, second.modelDir)]
  const test = loadMnist('test', [5, 6, 7, 8, 9], 32)
  const x = t.tidy(() => t.div(t.tensor4d(Float32Array.from(test.x), [32, 28, 28, 1]), 255))
  const [pa, pb] = [a.predict(x) as ReturnType<Tf['tensor']>, b.predict(x) as ReturnType<Tf['tensor']>]
  const diff = t.max(t.abs(t.sub(pa, pb))).dataSync()[0]
  assert.ok(diff <= 1e-6, `predictions differ by ${diff}`)
  t.dispose([x, pa, pb])
  a.dispose()
  b.dispose()
})

test('a corrupt entry is never used: the next job computes the features again and replaces it', async () => {
  const [entry] = await entries()
  const local = await app.storage.localPath(entry.path)
  const bytes = await readFile(local)
  bytes[bytes.length - 1] ^= 0xff
  await writeFile(local, bytes)
  const third = await runJob()
  assert.ok(
    third.messages.some((m) => m.includes('did not verify')),
    third.messages.join('\n'),
  )
  assert.ok(third.messages.some((m) => m.startsWith('computed backbone features for 300 samples')))
  assert.deepEqual(third.metrics, first.metrics)
  const [fresh] = await entries()
  assert.notEqual(fresh.id, entry.id)
  assert.equal(sha(await readFile(await app.storage.localPath(fresh.path))), fresh.sha256)
})

test('cached features count toward the project storage usage, with its files and models', async () => {
  const [entry] = await entries()
  // The dataset and the jobs' result files (fine-tune-results CSVs) are the project's stored files.
  const files = await app.db.file.findMany({ where: { projectId, deletedAt: null, status: { not: 'error' } } })
  assert.ok(files.some((f) => f.id === fileId))
  const fileBytes = files.reduce((sum, f) => sum + Number(f.bytes), 0)
  // and the jobs' fine-tuned models (artifacts)
  const artifacts = await app.db.artifact.findMany({ where: { projectId } })
  const artifactBytes = artifacts.reduce((sum, a) => sum + Number(a.bytes), 0)
  const usage = await app.inject({ method: 'GET', url: `/v1/admin/projects/${projectId}/usage`, headers: adminAuth })
  assert.equal(usage.statusCode, 200, usage.body)
  assert.equal(usage.json().storage_used_bytes, fileBytes + artifactBytes + Number(entry.bytes))
})

test('eviction removes least recently used entries until the cache fits', async () => {
  const [real] = await entries()
  // two more entries of another "backbone", older and newer than the real one
  const make = async (name: string, lastUsedAt: Date) => {
    const path = `features/${projectId}/${fileId}/${name}.bin`
    const stored = await app.storage.put(path, Buffer.alloc(1000, 1))
    return app.db.featureCacheEntry.create({
      data: {
        id: `feat-${name}`,
        projectId,
        fileId,
        fileSha256: real.fileSha256,
        backboneSha256: name,
        preprocessing: real.preprocessing,
        path,
        sha256: stored.sha256,
        bytes: BigInt(stored.bytes),
        rows: 1,
        lastUsedAt,
      },
    })
  }
  const old = await make('old', new Date(real.lastUsedAt.getTime() - 60_000))
  const recent = await make('recent', new Date(real.lastUsedAt.getTime() + 60_000))
  const deps = {
    db: app.db,
    storage: app.storage,
    config: { ...env.config, featureCacheBytes: Number(real.bytes) + 1000 },
  }
  assert.equal(await evictFeatures(deps), 1)
  const left = (await entries()).map((e) => e.id).sort()
  assert.deepEqual(left, [real.id, recent.id].sort())
  assert.equal(await app.storage.exists(old.path), false)
  // a smaller cache evicts the real entry (older than `recent`) too
  assert.equal(await evictFeatures({ ...deps, config: { ...deps.config, featureCacheBytes: 1000 } }), 1)
  assert.deepEqual(
    (await entries()).map((e) => e.id),
    [recent.id],
  )
  assert.equal(await app.storage.exists(real.path), false)
})

test('features that do not fit the storage quota are not cached: the job trains on them in memory and says why', async () => {
  // the real entry was evicted above: this job computes the features and would store them
  const real = async () => (await entries()).filter((e) => e.backboneSha256.length === 64)
  assert.equal((await real()).length, 0)
  // An upload in flight (a reservation in Redis, not yet a row) holds all of the quota but 1 MB, less than
  // the features need: counting only what is stored would let them in. It ends once the features were
  // refused, before the first checkpoint (small batches make that epoch long), which then fits.
  const held = new StorageReservation(app, projectId)
  await held.reserve(env.config.storageQuotaBytes - (await storageUsed(app, projectId)) - 1_000_000)
  let job: { id: string }
  try {
    job = await createTransferJob(app, key, fileId, { n_epochs: 1, batch_size: 2 })
    await waitFor(
      () => app.db.jobEvent.findFirst({ where: { jobId: job.id, message: { startsWith: 'training features' } } }),
      120_000,
      'the features event',
      10,
    )
  } finally {
    await held.release()
  }
  const done = await waitForTerminal(app, job.id)
  assert.equal(done.status, 'succeeded', `${done.errorCode}: ${done.errorMessage}`)
  const messages = (await app.db.jobEvent.findMany({ where: { jobId: job.id }, orderBy: { seq: 'asc' } })).map(
    (e) => e.message,
  )
  assert.ok(
    messages.some((m) =>
      /^training features not cached \(this job trains on the ones it computed in memory\): Caching the training features needs \d+ bytes; the project stores \d+ of its \d+-byte quota/.test(
        m,
      ),
    ),
    messages.join('\n'),
  )
  assert.ok(messages.some((m) => m.startsWith('computed backbone features for 300 samples')))
  assert.equal((await real()).length, 0, 'no entry was recorded')
  assert.deepEqual(
    (await app.storage.list(`features/${projectId}`)).map((o) => o.key),
    (await entries()).map((e) => e.path),
    'no feature bytes were stored',
  )
})

test('deleting the file deletes its cached features', async () => {
  const [entry] = await entries()
  const del = await app.inject({ method: 'DELETE', url: `/v1/files/${fileId}`, headers: bearer(key) })
  assert.equal(del.statusCode, 200, del.body)
  assert.equal((await entries()).length, 0)
  assert.equal(await app.storage.exists(entry.path), false)
  assert.equal(await app.storage.exists(`features/${projectId}/${fileId}`), false)
})

test('every byte the jobs stored is counted in the project usage (features, checkpoints, models, result files)', async () => {
  const audit = await auditProjectStorage(app, projectId)
  assert.deepEqual(audit.unknown, [], 'objects no project owns')
  assert.equal(audit.bytes, await storageUsed(app, projectId), JSON.stringify(audit.objects, null, 1))
})

// Memory budgets end to end (issue 14), with small limits so it runs fast: an API process (REFIT_ROLE=api)
// whose estimator allows 2 GiB per training process and 1100 MiB per inference process, and a worker on
// a smaller machine (TRAINING_MEMORY_BYTES 700 MiB), so a job the API lets through can still outgrow its
// worker. A training process holds ~410 MiB before it trains anything (Node, tfjs-node, sharp), so the
// children's budgets cannot be much smaller than these. This machine has cgroup v1: the RSS watchdog is
// the hard limit. The API and the worker keep their pids through every kill: only the children die.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { convModel, denseModel, imageZip, modelZip, solidPng, tabularCsv } from '../helpers/memory-fixtures.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'
import { isAlive, startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

const MiB = 1024 ** 2
const API_TRAINING = 2048 * MiB
const WORKER_TRAINING = 700 * MiB
const INFERENCE = 1100 * MiB
let env: TestEnv
let api: RunningService
let worker: WorkerProcess
let workerPid: number
let apiPid: number

before(async () => {
  env = await createTestEnv('memory_limits', {
    TRAINING_MEMORY_BYTES: String(API_TRAINING),
    INFERENCE_MEMORY_BYTES: String(INFERENCE),
    INFERENCE_PROCESSES: '1',
    // keep every model the test loads, and never recycle: the cached models must add up in one process
    INFERENCE_CACHE_MB: '4096',
    INFERENCE_RECYCLE_PERCENT: '100',
    WORKER_CONCURRENCY: '2',
  })
  ;[api, worker] = await Promise.all([
    startService(env.env, { role: 'api' }),
    startWorkerProcess({ ...env.env, TRAINING_MEMORY_BYTES: String(WORKER_TRAINING) }, 180_000),
  ])
  apiPid = api.child.pid!
  workerPid = worker.pid
})

after(async () => {
  await api?.stop()
  await worker?.kill()
  await env?.cleanup()
})

type Client = ReturnType<typeof httpClient>

async function project(name: string): Promise<Client> {
  const admin = httpClient(api.url, ADMIN_TOKEN)
  const p = await admin.post('/v1/admin/projects', { name })
  assert.equal(p.status, 201, JSON.stringify(p.body))
  const k = await admin.post(`/v1/admin/projects/${p.body.id}/api_keys`, { name: 'k' })
  assert.equal(k.status, 201, JSON.stringify(k.body))
  return httpClient(api.url, k.body.key)
}

async function processedFile(client: Client, content: Buffer, name: string): Promise<string> {
  const up = await client.upload('/v1/files', content, name, { purpose: 'fine-tune' })
  assert.equal(up.status, 201, JSON.stringify(up.body))
  return waitFor(
    async () => {
      const f = await client.get(`/v1/files/${up.body.id}`)
      if (f.body.status === 'error') throw new Error(JSON.stringify(f.body))
      return f.body.status === 'processed' ? (f.body.id as string) : null
    },
    90_000,
    `${name} to be validated`,
  )
}

const detail = (body: any, field: string) => Number(body.error.details.find((d: any) => d.field === field)?.message)

function processesUp() {
  assert.ok(isAlive(workerPid), 'the worker process is still up')
  assert.equal(worker.child.exitCode, null)
  assert.equal(worker.pid, workerPid)
  assert.equal(api.child.exitCode, null, 'the API process is still up')
  assert.equal(api.child.pid, apiPid)
}

test('training: refused by the estimator; let through, then killed past the worker limit (out_of_memory) while another project trains', async () => {
  const a = await project('big-images')
  const b = await project('tabular')
  const [images, rows] = await Promise.all([
    processedFile(a, await imageZip(64, 96, 96, 4), 'rgb96.zip'),
    processedFile(b, tabularCsv(300, 8, 3), 'rows.csv'),
  ])

  // cnn-large on 96x96x3 at batch 64: ~2.9 GiB estimated, over the API's 2 GiB
  const refused = await a.post('/v1/fine_tuning/jobs', {
    model: 'cnn-large',
    training_file: images,
    method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 64, n_epochs: 1 } } },
  })
  assert.equal(refused.status, 400, JSON.stringify(refused.body))
  assert.equal(refused.body.error.code, 'training_memory_exceeded')
  assert.equal(detail(refused.body, 'limit_bytes'), API_TRAINING)
  assert.ok(detail(refused.body, 'estimated_bytes') > API_TRAINING)
  assert.match(
    refused.body.error.message,
    /estimated to need [\d.]+ GiB \(\d+ bytes: .*\).*2\.0 GiB .*TRAINING_MEMORY_BYTES/,
  )

  // at batch 16 the estimate (~1.6 GiB) passes the API, but the worker's training processes may use 700 MiB
  const big = await a.post('/v1/fine_tuning/jobs', {
    model: 'cnn-large',
    training_file: images,
    method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 16, n_epochs: 2 } } },
  })
  assert.equal(big.status, 200, JSON.stringify(big.body))
  const small = await b.post('/v1/fine_tuning/jobs', {
    model: 'mlp-small',
    training_file: rows,
    method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 32, n_epochs: 3 } } },
  })
  assert.equal(small.status, 200, JSON.stringify(small.body))

  const finished = (client: Client, id: string) =>
    waitFor(
      async () => {
        const j = await client.get(`/v1/fine_tuning/jobs/${id}`)
        return ['succeeded', 'failed', 'cancelled'].includes(j.body.status) ? j.body : null
      },
      150_000,
      `job ${id} to finish`,
    )
  const [oom, ok] = await Promise.all([finished(a, big.body.id), finished(b, small.body.id)])
  assert.equal(oom.status, 'failed', JSON.stringify(oom))
  assert.equal(oom.error.code, 'out_of_memory', JSON.stringify(oom.error))
  assert.equal(oom.error.retryable, false)
  assert.match(
    oom.error.message,
    /reached \d+ MiB \(\d+ bytes\), over its 700 MiB \(734003200 bytes, TRAINING_MEMORY_BYTES\) budget/,
  )
  const events = await a.get(`/v1/fine_tuning/jobs/${big.body.id}/events?limit=50`)
  const failure = events.body.data.find((e: any) => e.data?.code === 'out_of_memory')
  assert.ok(failure, JSON.stringify(events.body.data))
  assert.equal(failure.level, 'error')
  assert.equal(failure.data.limit_bytes, WORKER_TRAINING)
  assert.ok(failure.data.rss_bytes > WORKER_TRAINING, JSON.stringify(failure.data))
  assert.ok(failure.data.peak_rss_bytes >= failure.data.rss_bytes, JSON.stringify(failure.data))
  assert.equal(failure.data.limited_by, 'watchdog')
  const created = events.body.data.find((e: any) => e.data?.memory_estimate_bytes)
  assert.ok(created, 'the creation event carries the estimate')
  assert.ok(created.data.memory_estimate_bytes <= API_TRAINING, 'the estimate let it through')
  assert.ok(created.data.memory_estimate_bytes > WORKER_TRAINING, 'and it is over the worker budget')
  // the code is in the published job failure catalogue
  const doc = (await (await fetch(`${api.url}/docs/json`)).json()) as { info: { description: string } }
  assert.match(doc.info.description, /\| `out_of_memory` \| no \| The training process passed its memory budget/)

  assert.equal(ok.status, 'succeeded', JSON.stringify(ok.error))
  assert.ok(ok.fine_tuned_model)
  // side by side on the one worker (unix seconds: overlapping intervals)
  assert.ok(ok.started_at <= oom.finished_at && oom.started_at <= ok.finished_at, JSON.stringify([ok, oom]))
  processesUp()
  assert.match(worker.output(), /training process over its memory budget: killed/)
})

test('evaluation: refused by the estimator; an evaluation process past the worker limit is killed (out_of_memory)', async () => {
  const c = await project('evaluate')
  // a one-conv model with 16 filters on twelve 1024x1024 images: ~340 MiB of activations each; an evaluation
  // runs such large inputs 8 at a time (forwardBatchSize), ~2.7 GiB per pass
  const conv = await c.upload('/v1/models', await modelZip(convModel(1024, 16)), 'conv.zip', {
    input_shape: JSON.stringify([1024, 1024, 3]),
    classes: '["class_0","class_1"]',
  })
  assert.equal(conv.status, 201, JSON.stringify(conv.body))
  const photos = await processedFile(c, await imageZip(12, 1024, 1024, 2), 'photos.zip')
  const refused = await c.post(`/v1/models/${conv.body.id}/evaluations`, { file: photos })
  assert.equal(refused.status, 400, JSON.stringify(refused.body))
  assert.equal(refused.body.error.code, 'evaluation_memory_exceeded')
  assert.equal(detail(refused.body, 'limit_bytes'), API_TRAINING)
  assert.ok(detail(refused.body, 'estimated_bytes') > API_TRAINING)
  assert.match(refused.body.error.message, /Evaluating .* \(12 samples\) is estimated to need .*TRAINING_MEMORY_BYTES/)

  // 1400 features -> 25,000 units: 134 MiB of weights, estimated at ~850 MiB to load and run (under the
  // API's 1100 MiB, so the upload passes); loading holds the weights three times at its peak, over the
  // worker's 700 MiB
  const features = 1400
  const wide = await c.upload('/v1/models', await modelZip(denseModel(features, 25_000)), 'wide.zip', {
    input_shape: JSON.stringify([features]),
    classes: '["a","b"]',
  })
  assert.equal(wide.status, 201, JSON.stringify(wide.body))
  const header = [...Array.from({ length: features }, (_, j) => `f${j}`), 'label'].join(',')
  const lines = Array.from({ length: 8 }, (_, r) =>
    [...Array.from({ length: features }, (_, j) => ((r + j) % 10) / 10), r % 2 ? 'a' : 'b'].join(','),
  )
  const file = await processedFile(c, Buffer.from(`${header}\n${lines.join('\n')}\n`), 'wide.csv')
  const started = await c.post(`/v1/models/${wide.body.id}/evaluations`, { file })
  assert.equal(started.status, 201, JSON.stringify(started.body))
  const done = await waitFor(
    async () => {
      const e = await c.get(`/v1/models/${wide.body.id}/evaluations/${started.body.id}`)
      return ['succeeded', 'failed'].includes(e.body.status) ? e.body : null
    },
    90_000,
    'the evaluation to finish',
  )
  assert.equal(done.status, 'failed', JSON.stringify(done))
  assert.equal(done.error.code, 'out_of_memory')
  assert.match(
    done.error.message,
    /evaluation process reached \d+ MiB \(\d+ bytes\), over its 700 MiB \(734003200 bytes, TRAINING_MEMORY_BYTES\) budget/,
  )
  processesUp()
})

test('inference: an upload and a prediction refused by the estimator; a child killed past its limit is replaced while /healthz answers', async () => {
  const c = await project('models')
  const upload = async (zip: Buffer, inputShape: number[]) =>
    c.upload('/v1/models', zip, 'model.zip', { input_shape: JSON.stringify(inputShape), classes: '["a","b"]' })

  // the probe's model: one conv layer on 2048x2048x3, under a kilobyte zipped, ~1.2 GiB for one input
  const probeZip = await modelZip(convModel(2048))
  assert.ok(probeZip.length < 2048, `${probeZip.length} bytes`)
  const refusedUpload = await upload(probeZip, [2048, 2048, 3])
  assert.equal(refusedUpload.status, 400, JSON.stringify(refusedUpload.body))
  assert.equal(refusedUpload.body.error.code, 'inference_memory_exceeded')
  assert.equal(detail(refusedUpload.body, 'limit_bytes'), INFERENCE)
  assert.ok(detail(refusedUpload.body, 'estimated_bytes') > INFERENCE)
  assert.match(refusedUpload.body.error.message, /INFERENCE_MEMORY_BYTES/)

  // at 1024x1024 one input fits (~630 MiB), four do not
  const conv = await upload(await modelZip(convModel(1024)), [1024, 1024, 3])
  assert.equal(conv.status, 201, JSON.stringify(conv.body))
  const png = (await solidPng(8, 8, 90)).toString('base64')
  const four = await c.post(`/v1/models/${conv.body.id}/predictions`, {
    inputs: Array.from({ length: 4 }, () => ({ image: png })),
  })
  assert.equal(four.status, 400, JSON.stringify(four.body))
  assert.equal(four.body.error.code, 'inference_memory_exceeded')
  assert.equal(detail(four.body, 'limit_bytes'), INFERENCE)
  assert.ok(detail(four.body, 'estimated_bytes') > INFERENCE)
  assert.match(four.body.error.message, /Predicting 4 input\(s\)/)

  // models of 134 MiB of weights: each passes the estimate alone (~850 MiB, the load's peak included);
  // cached side by side in the one inference process, the next load's peak outgrows it (after two or three:
  // it depends on what the allocator gave back between loads)
  const wideZip = await modelZip(denseModel(1400, 25_000))
  const features = Array.from({ length: 1400 }, (_, i) => (i % 10) / 10)
  let polling = true
  const health: number[] = []
  const poller = (async () => {
    while (polling) {
      health.push(
        await fetch(`${api.url}/healthz`).then(
          (r) => r.status,
          () => 0,
        ),
      )
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  let killed: any = null
  let answered = 0
  try {
    for (let i = 0; i < 8 && !killed; i++) {
      const m = await upload(wideZip, [1400])
      assert.equal(m.status, 201, JSON.stringify(m.body))
      const r = await c.post(`/v1/models/${m.body.id}/predictions`, { inputs: [{ features }] })
      if (r.status === 503) killed = r.body
      else {
        assert.equal(r.status, 200, JSON.stringify(r.body))
        answered++
      }
    }
  } finally {
    polling = false
    await poller
  }
  assert.ok(killed, `the inference process was killed for memory\n${api.output().slice(-3000)}`)
  assert.ok(answered >= 1, 'the first model alone fits')
  assert.equal(killed.error.code, 'inference_out_of_memory')
  assert.equal(detail(killed, 'limit_bytes'), INFERENCE)
  assert.ok(detail(killed, 'rss_bytes') > INFERENCE)
  // a fresh process answers the next request: the one-conv model on one input, where four were refused
  const one = await c.post(`/v1/models/${conv.body.id}/predictions`, { inputs: [{ image: png }] })
  assert.equal(one.status, 200, JSON.stringify(one.body))
  assert.ok(health.length >= 3, `${health.length} health checks`)
  assert.deepEqual([...new Set(health)], [200], '/healthz answered 200 throughout')
  processesUp()
  assert.match(api.output(), /inference process exited; replacing it/)
})

import assert from 'node:assert/strict'
import { type ChildProcess, fork } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import type { ChildMessage, TrainRequest } from '../../src/engine/protocol.js'
import { writeCsv, writeIdxZip } from './helpers.js'

const entry = fileURLToPath(new URL('../../workers/children/training-child.ts', import.meta.url))
let work: string
let trainZip: string

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'refit-child-'))
  trainZip = path.join(work, 'train.zip')
  await writeIdxZip(loadMnist('train', [5, 6, 7, 8, 9], 600), trainZip)
})
after(async () => {
  await rm(work, { recursive: true, force: true })
})

function start(): ChildProcess {
  return fork(entry, [], {
    execPath: process.execPath,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  })
}

function request(overrides: Partial<TrainRequest>): TrainRequest {
  return {
    type: 'train',
    jobId: 'job-1',
    method: { type: 'transfer' },
    baseModelDir: builtinModelSourceDir('mnist-cnn'),
    baseModelId: 'mnist-cnn',
    training: { path: trainZip, format: 'idx' },
    hyperparameters: { n_epochs: 2, batch_size: 32, learning_rate: 1e-3, validation_split: 0.2 },
    seed: 3,
    outputDir: path.join(work, 'out'),
    backend: 'auto',
    ...overrides,
  }
}

/** Runs the child to its exit, collecting messages; `onMessage` may talk back. */
function run(
  req: TrainRequest,
  onMessage: (m: ChildMessage, child: ChildProcess) => void = () => {},
): Promise<{ messages: ChildMessage[]; code: number | null; stderr: string }> {
  const child = start()
  const messages: ChildMessage[] = []
  let stderr = ''
  child.stderr!.on('data', (d) => {
    stderr += d
  })
  child.on('message', (m: ChildMessage) => {
    messages.push(m)
    onMessage(m, child)
  })
  child.send(req)
  return new Promise((resolve) => child.on('exit', (code) => resolve({ messages, code, stderr })))
}

/**
 * Batches a child may finish between sending a progress message and reading the parent's answer to it: the
 * loop reads messages at least every 20 ms, so at ~1 ms per batch of 8 on the graph path (a few ms eager) and
 * with IPC both ways under load, up to ~10; an ignored message would run on for epochs.
 */
const IN_FLIGHT_STEPS = 12

test('forked training process: backend, events, epochs, checkpoints, done, in order', async () => {
  const outputDir = path.join(work, 'ok')
  const { messages, code, stderr } = await run(request({ outputDir }))
  assert.equal(code, 0, stderr.slice(-2000))
  const kinds = messages.map((m) => m.type)
  assert.equal(kinds[0], 'backend')
  assert.equal(kinds.at(-1), 'done')
  const backend = messages[0] as Extract<ChildMessage, { type: 'backend' }>
  assert.equal(backend.backend, 'tensorflow')
  const order = kinds.filter((k) => k === 'epoch' || k === 'checkpoint' || k === 'done')
  assert.deepEqual(order, ['epoch', 'checkpoint', 'epoch', 'checkpoint', 'done'])
  assert.ok(kinds.indexOf('event') < kinds.indexOf('epoch'))
  assert.ok(kinds.includes('progress'))
  const done = messages.at(-1) as Extract<ChildMessage, { type: 'done' }>
  assert.equal(done.cancelled, false)
  assert.equal(done.modelDir, path.join(outputDir, 'model'))
  assert.ok(existsSync(path.join(done.modelDir, 'weights.bin')))
  assert.ok(done.evaluation && done.evaluation.samples === 120 && done.evaluation.accuracy > 0.8)
  assert.equal(done.trainedSamples, 2 * 480)
  assert.equal(done.bestEpoch, null)
})

test('forked training process: supervised architecture from scratch, with early stopping', async () => {
  const outputDir = path.join(work, 'supervised')
  const { messages, code, stderr } = await run(
    request({
      outputDir,
      method: { type: 'supervised' },
      baseModelDir: undefined,
      architecture: 'mlp-small',
      hyperparameters: {
        n_epochs: 3,
        batch_size: 32,
        learning_rate: 1e-3,
        validation_split: 0.2,
        optimizer: 'rmsprop',
        early_stopping: { patience: 5, min_delta: 0, monitor: 'val_loss' },
      },
    }),
  )
  assert.equal(code, 0, stderr.slice(-2000))
  const done = messages.at(-1) as Extract<ChildMessage, { type: 'done' }>
  assert.equal(done.type, 'done')
  assert.ok(done.bestEpoch !== null && done.bestEpoch >= 1 && done.bestEpoch <= 3)
  assert.ok(done.evaluation && done.evaluation.accuracy > 0.7)
})

test('cancel stops within one batch and reports done with cancelled: true', async () => {
  let progressSeen = 0
  let stepAtCancel = -1
  const { messages, code } = await run(
    request({
      outputDir: path.join(work, 'cancel'),
      hyperparameters: { n_epochs: 50, batch_size: 8, learning_rate: 1e-3, validation_split: 0.1 },
    }),
    (m, child) => {
      if (m.type === 'progress' && ++progressSeen === 1) {
        stepAtCancel = m.step
        child.send({ type: 'cancel' })
      }
    },
  )
  assert.equal(code, 0)
  const done = messages.at(-1) as Extract<ChildMessage, { type: 'done' }>
  assert.equal(done.type, 'done')
  assert.equal(done.cancelled, true)
  assert.equal(done.modelDir, '')
  // the child may have finished a few batches while the cancel message was in flight, never an epoch (68
  // batches): the loop reads its messages at least every 20 ms, and a batch of 8 takes ~0.3-5 ms (graph or
  // eager). Sent on the first progress message (after batch 1): the next comes 250 ms later, and on a quiet
  // machine the graph step finishes the epoch before that.
  const stepsDone = done.trainedSamples / 8
  assert.ok(
    stepsDone >= stepAtCancel && stepsDone <= stepAtCancel + IN_FLIGHT_STEPS,
    `${stepsDone} steps, cancel at ${stepAtCancel}`,
  )
  assert.ok(!messages.some((m) => m.type === 'epoch'))
})

test('pause writes a mid-epoch checkpoint at the end of its batch and reports done with paused: true', async () => {
  let progressSeen = 0
  let stepAtPause = -1
  const { messages, code } = await run(
    request({
      outputDir: path.join(work, 'pause'),
      hyperparameters: { n_epochs: 50, batch_size: 8, learning_rate: 1e-3, validation_split: 0.1 },
    }),
    (m, child) => {
      if (m.type === 'progress' && ++progressSeen === 1) {
        stepAtPause = m.step
        child.send({ type: 'pause' })
      }
    },
  )
  assert.equal(code, 0)
  const done = messages.at(-1) as Extract<ChildMessage, { type: 'done' }>
  assert.equal(done.type, 'done')
  assert.equal(done.paused, true)
  assert.equal(done.cancelled, true)
  const ckpt = messages.filter((m) => m.type === 'checkpoint').at(-1) as Extract<ChildMessage, { type: 'checkpoint' }>
  assert.equal(ckpt.midEpoch, true)
  assert.equal(ckpt.step, done.trainedSamples / 8, 'checkpointed at the batch it stopped on')
  assert.ok(
    ckpt.step >= stepAtPause && ckpt.step <= stepAtPause + IN_FLIGHT_STEPS,
    `${ckpt.step}, pause at ${stepAtPause}`,
  )
  assert.equal(ckpt.dir, path.join(work, 'pause', 'checkpoints', `step-${ckpt.step}`))
  const state = JSON.parse(await readFile(path.join(ckpt.dir, 'state.json'), 'utf8'))
  assert.equal(state.step, ckpt.step)
  assert.equal(state.inEpoch.batches, ckpt.step - state.epoch * Math.ceil(540 / 8))
})

test('a dataset the model cannot take is a permanent error', async () => {
  const csv = path.join(work, 'tab.csv')
  await writeCsv(csv)
  const { messages, code } = await run(request({ training: { path: csv, format: 'csv' }, backend: 'cpu' }))
  assert.equal(code, 1)
  const err = messages.at(-1) as Extract<ChildMessage, { type: 'error' }>
  assert.equal(err.type, 'error')
  assert.equal(err.code, 'dataset_incompatible')
  assert.equal(err.permanent, true)
})

test('the child exits when its parent disconnects', async () => {
  const child = start()
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.once('message', () => child.disconnect())
  child.send(
    request({
      outputDir: path.join(work, 'orphan'),
      hyperparameters: { n_epochs: 100, batch_size: 8, learning_rate: 1e-3, validation_split: 0.1 },
    }),
  )
  const t0 = Date.now()
  const code = await exited
  assert.equal(code, 1)
  assert.ok(Date.now() - t0 < 20_000)
  assert.ok(!existsSync(path.join(work, 'orphan', 'model')))
})

test('keepAlive: after done the process says idle and trains the next job with what it loaded; a stale cancel is ignored, one sent before the next train holds', async () => {
  const child = start()
  let stderr = ''
  child.stderr!.on('data', (d) => {
    stderr += d
  })
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const jobs: ChildMessage[][] = []
  let current: ChildMessage[] = []
  let nextIdle: () => void = () => {}
  child.on('message', (m: ChildMessage) => {
    current.push(m)
    if (m.type === 'idle') {
      jobs.push(current)
      current = []
      nextIdle()
    }
  })
  const runJob = (req: TrainRequest, before?: () => void) =>
    new Promise<void>((resolve, reject) => {
      nextIdle = resolve
      exited.then((code) => reject(new Error(`exited ${code}: ${stderr.slice(-2000)}`)))
      before?.()
      child.send(req)
    })
  const supervised = (jobId: string): TrainRequest =>
    request({
      jobId,
      keepAlive: true,
      outputDir: path.join(work, `kept-${jobId}`),
      method: { type: 'supervised' },
      baseModelDir: undefined,
      architecture: 'mlp-small',
      hyperparameters: { n_epochs: 2, batch_size: 32, learning_rate: 1e-3, validation_split: 0.2 },
    })
  try {
    await runJob(supervised('job-a'))
    // a cancel for job-a that crossed its idle: the next job must not see it
    await runJob(supervised('job-b'), () => child.send({ type: 'cancel', jobId: 'job-a' }))
    // a cancel for job-c sent before its train: it holds
    await runJob(supervised('job-c'), () => child.send({ type: 'cancel', jobId: 'job-c' }))
  } finally {
    child.kill('SIGKILL')
  }
  const doneOf = (ms: ChildMessage[]) => ms.find((m) => m.type === 'done') as Extract<ChildMessage, { type: 'done' }>
  const [a, b, c] = jobs
  assert.equal(doneOf(a).cancelled, false)
  assert.equal(doneOf(b).cancelled, false)
  assert.equal(doneOf(c).cancelled, true)
  // job-b took the dataset job-a loaded, and said so; the same seed and settings: the same metrics
  const said = (ms: ChildMessage[]) =>
    ms.filter((m) => m.type === 'event').map((m) => (m as { message: string }).message)
  assert.ok(!said(a).some((s) => s.includes("from this process's memory")), JSON.stringify(said(a)))
  assert.ok(
    said(b).some((s) => s.startsWith("training dataset from this process's memory")),
    JSON.stringify(said(b)),
  )
  const epochs = (ms: ChildMessage[]) => ms.filter((m) => m.type === 'epoch').map((m) => JSON.stringify(m))
  assert.equal(epochs(a).length, 2)
  assert.deepEqual(epochs(b), epochs(a))
  // and the same model files, names included (a fresh process would write these too; resuming reads by name)
  for (const file of ['model.json', 'weights.bin']) {
    const [fa, fb] = await Promise.all([a, b].map((ms) => readFile(path.join(doneOf(ms).modelDir, file))))
    assert.ok(fa.equals(fb), `${file} differs between the first job and the next in the same process`)
  }
  // each job reports the backend (picked and self-tested once)
  assert.deepEqual(
    jobs.map((ms) => ms.filter((m) => m.type === 'backend').length),
    [1, 1, 1],
  )
})

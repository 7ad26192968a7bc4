// Helpers for the model tests: real files validated by the real file processor, and a fine-tuned model made
// by running the real training process and registering its output the way the training processor does.
import { type ChildProcess, fork } from 'node:child_process'
import { cp, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import sharp from 'sharp'
import type { LoadedDataset } from '../../src/datasets/types.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import type { ChildMessage, TrainRequest } from '../../src/engine/protocol.js'
import { fineTunedModelId, newId } from '../../src/lib/ids.js'
import { bearer, multipart } from '../helpers/env.js'
import { fileProcessorFor } from '../helpers/file-processor.js'

/** Uploads `content` through the API and validates it with the worker's file processor. */
export async function uploadProcessedFile(app: FastifyInstance, key: string, name: string, content: Buffer) {
  const body = multipart({ purpose: 'fine-tune' }, { name, content })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  if (res.statusCode !== 201) throw new Error(`upload ${name}: ${res.statusCode} ${res.body}`)
  const fileId = res.json().id as string
  await fileProcessorFor(app)(fileId)
  const file = await app.db.file.findUniqueOrThrow({ where: { id: fileId } })
  if (file.status !== 'processed') throw new Error(`file ${name} not processed: ${JSON.stringify(file.statusDetails)}`)
  return fileId
}

/** PNG bytes of row `i` of a 28x28x1 dataset. */
export function pngOf(ds: LoadedDataset, i: number): Promise<Buffer> {
  const [h, w, c] = ds.sampleShape
  const px = Buffer.from((ds.x as Uint8Array).subarray(i * h * w * c, (i + 1) * h * w * c))
  return sharp(px, { raw: { width: w, height: h, channels: c as 1 | 3 } })
    .png()
    .toBuffer()
}

const trainingEntry = fileURLToPath(new URL('../../workers/children/training-child.ts', import.meta.url))

/** Runs the training process on `request` and collects its messages until it exits. */
export function runTraining(request: TrainRequest): Promise<ChildMessage[]> {
  const child: ChildProcess = fork(trainingEntry, [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    serialization: 'advanced',
  })
  const messages: ChildMessage[] = []
  child.on('message', (m: ChildMessage) => messages.push(m))
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => {
      const done = messages.find((m) => m.type === 'done')
      if (done) resolve(messages)
      else
        reject(
          new Error(`training process exited ${code}: ${JSON.stringify(messages.filter((m) => m.type === 'error'))}`),
        )
    })
    child.send(request)
  })
}

/**
 * A fine-tuned model from `mnist-cnn`, trained by the real training process on `trainingFileId`, and
 * registered with its job, metric rows, checkpoints and artifacts as the training processor registers them.
 */
export async function fineTuneMnist(app: FastifyInstance, projectId: string, trainingFileId: string, epochs = 2) {
  const file = await app.db.file.findUniqueOrThrow({ where: { id: trainingFileId } })
  const jobId = newId('ftjob')
  const outputKey = `jobs/${jobId}/attempt-1`
  const hyperparameters = { n_epochs: epochs, batch_size: 32, learning_rate: 1e-3, validation_split: 0.2 }
  const messages = await runTraining({
    type: 'train',
    jobId,
    method: { type: 'transfer' },
    baseModelDir: builtinModelSourceDir('mnist-cnn'),
    baseModelId: 'mnist-cnn',
    training: { path: app.storage.workPath(file.storagePath!), format: 'idx' },
    hyperparameters,
    seed: 11,
    outputDir: app.storage.workPath(outputKey),
    backend: 'auto',
  } as TrainRequest)
  const done = messages.find((m) => m.type === 'done') as Extract<ChildMessage, { type: 'done' }>
  const backend = (messages.find((m) => m.type === 'backend') as { backend: string } | undefined)?.backend ?? null
  await app.db.fineTuningJob.create({
    data: {
      id: jobId,
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId,
      method: { type: 'transfer' },
      hyperparameters,
      seed: 11,
      suffix: 'digits',
      status: 'succeeded',
      attempt: 1,
      backend,
      finishedAt: new Date(),
    },
  })
  for (const m of messages) {
    if (m.type === 'epoch')
      for (const [name, value] of Object.entries(m.metrics))
        await app.db.metric.create({ data: { jobId, step: m.step, epoch: m.epoch, name, value: value as number } })
    if (m.type === 'checkpoint') await registerCheckpoint(app, projectId, jobId, m.dir, m.epoch, m.step, m.metrics)
  }
  const modelKey = app.storage.keyOf(done.modelDir)
  const digest = await app.storage.digest(modelKey)
  const metadata = JSON.parse(await readFile(join(done.modelDir, 'metadata.json'), 'utf8'))
  const modelId = fineTunedModelId('mnist-cnn', 'digits', jobId)
  const artifactId = newId('art')
  await app.db.artifact.create({
    data: {
      id: artifactId,
      projectId,
      kind: 'model',
      path: modelKey,
      sha256: digest.sha256,
      bytes: BigInt(digest.bytes),
    },
  })
  await app.db.model.create({
    data: {
      id: modelId,
      projectId,
      kind: 'fine_tuned',
      baseModelId: 'mnist-cnn',
      jobId,
      trainingFileId,
      artifactId,
      metadata: { ...metadata, metrics: { evaluation: done.evaluation }, backend, seed: 11 },
    },
  })
  await app.db.fineTuningJob.update({ where: { id: jobId }, data: { fineTunedModelId: modelId } })
  return { jobId, modelId, modelDir: done.modelDir, messages }
}

/** Records a checkpoint directory (artifact first, then the row), as the training processor does. */
export async function registerCheckpoint(
  app: FastifyInstance,
  projectId: string,
  jobId: string,
  dir: string,
  epoch: number,
  step: number,
  metrics: object,
) {
  const digest = await app.storage.digest(app.storage.keyOf(dir))
  const artifactId = newId('art')
  await app.db.artifact.create({
    data: {
      id: artifactId,
      projectId,
      kind: 'checkpoint',
      path: digest.path,
      sha256: digest.sha256,
      bytes: BigInt(digest.bytes),
    },
  })
  const id = newId('ftckpt')
  await app.db.checkpoint.create({ data: { id, jobId, epoch, step, metrics: metrics as object, artifactId } })
  return id
}

/** Copies a whole model directory into the job's storage as checkpoint `step` and registers it. */
export async function registerWholeModelCheckpoint(
  app: FastifyInstance,
  projectId: string,
  jobId: string,
  modelDir: string,
  step: number,
) {
  const dir = app.storage.workPath(`jobs/${jobId}/attempt-1/checkpoints/whole-${step}`)
  await cp(modelDir, dir, { recursive: true })
  return registerCheckpoint(app, projectId, jobId, dir, 99, step, { loss: 0.1, accuracy: 0.9 })
}

// Service overhead: the same transfer training (mnist-cnn, digits 5-9, n_epochs 5, batch 128) through the
// service and in a bare TF.js script on the same backend, in one run.
//
//   service: a transfer job through the HTTP API; head-training throughput = per epoch, the job's progress
//            `samples_per_second` furthest into that epoch (the epoch's running average, excluding feature
//            computation, validation and checkpoints), median over epochs 2..n. Also reported: the interval
//            between consecutive epoch events (their database timestamps, ms), which includes validation,
//            checkpoint writing and IPC.
//   bare:    stock tfjs-node: tf.loadLayersModel(src/builtin-models/mnist-cnn), the `flatten` features computed
//            once, a fresh head (dense 128 relu, dropout 0.5, dense 5 softmax; adam 1e-3) trained with
//            model.fit on as many rows as the service trained on (its 90% after validation_split 0.1);
//            throughput = rows / epoch time (onEpochBegin..onEpochEnd), median over epochs 2..n.
// Goal: service / bare >= 0.95. The bare side runs after the job finished, so the two never share the CPU.
//
//   npm run build && npm run bench:service-overhead        (full: ~1.5 min)
//   npx tsx bench/service-overhead.ts --quick              (12000 samples, 2 epochs)
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { createDb } from '../src/db/client.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import { projectRoot } from '../src/lib/paths.js'
import { loadLayersModel, mnistInput, readMetadataJson, tfNode } from './bare-tf.js'
import {
  createJob,
  epochThroughput,
  followJob,
  median,
  mustSucceed,
  QUICK,
  round,
  run,
  startBench,
  table,
  uploadFile,
  writeBenchResult,
} from './service-bench.js'

const DIGITS = [5, 6, 7, 8, 9]
const LIMIT = QUICK ? 12000 : undefined
const EPOCHS = QUICK ? 2 : 5
const BATCH = 128
const SEED = 42
const GOAL = 0.95

async function bare(trainRows: number) {
  const tf = await tfNode()
  const dir = path.join(projectRoot, 'src', 'builtin-models', 'mnist-cnn')
  const meta = await readMetadataJson(dir)
  const base = await loadLayersModel(dir)
  const featureModel = tf.model({ inputs: base.inputs, outputs: base.getLayer(meta.feature_layer!).output })
  const ds = loadMnist('train', DIGITS, LIMIT)
  const t0 = performance.now()
  const parts = []
  for (let s = 0; s < ds.rows; s += 256) {
    const x = await mnistInput(ds, meta, s, Math.min(ds.rows, s + 256))
    parts.push(featureModel.predict(x) as import('@tensorflow/tfjs-node').Tensor2D)
    x.dispose()
  }
  const features = tf.concat(parts)
  await features.data()
  tf.dispose(parts)
  const featureMs = performance.now() - t0
  // a fixed shuffle, the first `trainRows` rows train (as many as the service trained on), the rest validate
  const order = tf.util.createShuffledIndices(ds.rows)
  const trainIdx = tf.tensor1d(Int32Array.from(order.slice(0, trainRows)), 'int32')
  const valIdx = tf.tensor1d(Int32Array.from(order.slice(trainRows)), 'int32')
  const labels = tf.oneHot(tf.tensor1d(ds.y, 'int32'), DIGITS.length)
  const [xTrain, yTrain, xVal, yVal] = [
    features.gather(trainIdx),
    labels.gather(trainIdx),
    features.gather(valIdx),
    labels.gather(valIdx),
  ]
  tf.dispose([features, labels, trainIdx, valIdx])
  const head = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [xTrain.shape[1]!], units: 128, activation: 'relu' }),
      tf.layers.dropout({ rate: 0.5 }),
      tf.layers.dense({ units: DIGITS.length, activation: 'softmax' }),
    ],
  })
  head.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })
  const epochMs: number[] = []
  let epochStart = 0
  const tFit = performance.now()
  await head.fit(xTrain, yTrain, {
    batchSize: BATCH,
    epochs: EPOCHS,
    shuffle: true,
    verbose: 0,
    callbacks: {
      onEpochBegin: async () => {
        epochStart = performance.now()
      },
      onEpochEnd: async () => {
        epochMs.push(performance.now() - epochStart)
      },
    },
  })
  const fitS = (performance.now() - tFit) / 1000
  const evalOut = head.evaluate(xVal, yVal, { batchSize: 512 }) as import('@tensorflow/tfjs-node').Scalar[]
  const valAccuracy = (await evalOut[1]!.data())[0]!
  tf.dispose([xTrain, yTrain, xVal, yVal, ...evalOut])
  const perEpoch = epochMs.map((ms) => round((trainRows / ms) * 1000))
  const steady = perEpoch.length > 1 ? perEpoch.slice(1) : perEpoch
  return {
    backend: tf.getBackend(),
    train_rows: trainRows,
    feature_ms: round(featureMs),
    fit_s: round(fitS, 2),
    per_epoch_samples_per_second: perEpoch,
    samples_per_second: median(steady),
    val_accuracy: round(valAccuracy, 4),
  }
}

run(async () => {
  const bench = await startBench('service_overhead')
  const db = createDb(bench.env.config.databaseUrl, 2)
  try {
    const { api, work } = bench
    const zip = path.join(work, 'digits-5-9.zip')
    const { rows } = await makeMnistDataset({ split: 'train', digits: DIGITS, format: 'idx', limit: LIMIT, out: zip })
    const fileId = await uploadFile(api, zip)
    const created = await createJob(api, {
      model: 'mnist-cnn',
      training_file: fileId,
      seed: SEED,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: EPOCHS, batch_size: BATCH } } },
    })
    const followed = await followJob(api, created.id, { pollMs: 100 })
    const job = mustSucceed(followed)
    const progress = epochThroughput(followed.readings)
    const trainRows = Math.round(job.trained_samples / EPOCHS)
    const epochEvents = await db.jobEvent.findMany({
      where: { jobId: job.id, type: 'metrics' },
      orderBy: { seq: 'asc' },
      select: { createdAt: true },
    })
    const intervals = epochEvents.slice(1).map((e, i) => e.createdAt.getTime() - epochEvents[i]!.createdAt.getTime())
    const service = {
      job: job.id,
      backend: job.backend,
      train_rows: trainRows,
      wall_s: round(followed.wall_s, 1),
      per_epoch_samples_per_second: progress.per_epoch,
      samples_per_second: progress.median,
      epoch_interval_samples_per_second: intervals.length ? round((trainRows / median(intervals)) * 1000) : null,
    }
    console.log(`service: ${service.samples_per_second} samples/s head training (${job.backend})`)

    const b = await bare(trainRows)
    console.log(`bare:    ${b.samples_per_second} samples/s head training (${b.backend})`)
    if (b.backend !== job.backend) console.warn(`warning: backends differ (service ${job.backend}, bare ${b.backend})`)
    const ratio = round(service.samples_per_second / b.samples_per_second, 3)
    const ratioWithEpochEnds =
      service.epoch_interval_samples_per_second === null
        ? null
        : round(service.epoch_interval_samples_per_second / b.samples_per_second, 3)

    console.log(
      `\n${table([
        {
          side: 'service (job progress)',
          samples_per_second: service.samples_per_second,
          per_epoch: Object.values(service.per_epoch_samples_per_second).join(' '),
          backend: job.backend,
        },
        {
          side: 'service (epoch-event intervals, incl. validation + checkpoint)',
          samples_per_second: service.epoch_interval_samples_per_second,
          per_epoch: '',
          backend: job.backend,
        },
        {
          side: 'bare tfjs-node model.fit',
          samples_per_second: b.samples_per_second,
          per_epoch: b.per_epoch_samples_per_second.join(' '),
          backend: b.backend,
        },
      ])}`,
    )
    console.log(
      `\nratio service/bare ${ratio} (goal >= ${GOAL}: ${ratio >= GOAL ? 'MET' : 'NOT MET'}); with validation and checkpoints in the service figure: ${ratioWithEpochEnds}${QUICK ? '  [--quick: tiny run, figures not comparable]' : ''}`,
    )
    const file = await writeBenchResult('service-overhead', {
      backend: job.backend,
      train_samples: rows,
      n_epochs: EPOCHS,
      batch_size: BATCH,
      service,
      bare: b,
      ratio,
      ratio_with_validation_and_checkpoints: ratioWithEpochEnds,
      goal: `service/bare head-training samples/s >= ${GOAL}`,
      goal_met: ratio >= GOAL,
      job_ids: [job.id],
    })
    console.log(`wrote ${file}`)
  } finally {
    await db.$disconnect()
    await bench.close()
  }
})

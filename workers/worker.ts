// The worker process: consumes the `files` queue and its resource class's training queue (`training` for
// cpu, `training-gpu`), the evaluations, webhooks and maintenance queues (all through the queue registry),
// registers itself in the worker registry (heartbeat), forks one training process per job, relays cancel
// broadcasts to the child that owns the job, and reconciles PostgreSQL with Redis once per cluster (a
// BullMQ job scheduler adds one `reconcile` job per interval, whichever worker takes it runs it): a job,
// file or webhook delivery whose enqueue was lost while Redis was down is enqueued again; the queue job
// id is the row id, so a duplicate enqueue is a no-op.
import { Redis } from 'ioredis'
import { pino } from 'pino'
import { type Config, loadConfig } from '../src/config.js'
import { createDb } from '../src/db/client.js'
import { backendCapabilities } from '../src/engine/backend.js'
import { deleteExpiredFiles } from '../src/modules/files/files-service.js'
import { notifyJobChanged } from '../src/modules/jobs/job-updates.js'
import { onTransition, PAUSING } from '../src/modules/jobs/lifecycle/lifecycle.js'
import { isTerminal } from '../src/modules/jobs/lifecycle/transitions.js'
import { advanceRunningSweeps, advanceSweep } from '../src/modules/sweeps/sweep-scheduler.js'
import { detectDevice, trainingQueueName } from '../src/modules/workers/resource-class.js'
import { jobThroughput, lastThroughput } from '../src/modules/workers/throughput.js'
import { type RegistryHandle, registerWorker } from '../src/modules/workers/worker-registry.js'
import { IDEMPOTENCY_TTL_MS } from '../src/plugins/idempotency.js'
import { cancelChannel, pauseChannel } from '../src/queue/catalog.js'
import { enqueueTraining, inTrainingQueue } from '../src/queue/enqueue.js'
import { closeQueues, consume, enqueue, openQueues, QUEUE_REGISTRY } from '../src/queue/registry.js'
import { createStorage } from '../src/storage/create-storage.js'
import type { WorkerDeps } from './deps.js'
import { activeEvaluations, startEvaluationWorker } from './evaluation-processor.js'
import { createFileProcessor } from './file-processor.js'
import { activeTrainings, createTrainingProcessor, probeBackend } from './training-job.js'
import { relayDeliveries, startWebhookDispatcher } from './webhook-dispatcher.js'

export interface WorkerHandle {
  deps: WorkerDeps
  /** the backend this worker's training processes run on, proven by a self-test at start */
  backend: { backend: string; selfTest: unknown; warnings: string[] }
  close(): Promise<void>
}

export async function startWorker(config: Config, opts: { reconcileEveryMs?: number } = {}): Promise<WorkerHandle> {
  const log = pino({ level: config.logLevel, base: { role: 'worker', pid: process.pid } })
  const db = createDb(config.databaseUrl, 5)
  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: null })
  redis.on('error', (err) => log.warn({ err: err.message }, 'redis error'))
  const storage = await createStorage(config)
  await storage.init()
  const backend = await probeBackend(config.tfBackend)
  for (const w of backend.warnings) log.warn({}, w)
  log.info(
    { backend: backend.backend, selfTest: backend.selfTest },
    `TF.js backend ${backend.backend} passed its self-test`,
  )
  const queues = openQueues(config, { onError: (err) => log.warn({ err: err.message }, 'queue error') })
  const notify = (jobId: string) => notifyJobChanged(redis, config.queuePrefix, jobId)
  const deps: WorkerDeps = { config, db, redis, storage, queues, log, notify, backend: backend.backend }

  const processFile = createFileProcessor(deps)
  const fileWorker = consume('files', config, (_p, job) => processFile(job), { concurrency: 2 })
  // This worker trains the jobs of its own resource class only (WORKER_RESOURCE_CLASS).
  const train = createTrainingProcessor(deps)
  const trainingQueue = trainingQueueName(config.workerResourceClass) === 'training-gpu' ? 'trainingGpu' : 'training'
  const trainingWorker = consume(trainingQueue, config, (_p, job, token) => train(job, token), {
    concurrency: config.workerConcurrency,
    // The processor only relays messages (training runs in its own process), so lock renewal never starves;
    // a lock that does expire means the worker died or froze, and another worker takes the job over.
    lockDuration: config.workerLockMs,
    stalledInterval: config.workerStalledIntervalMs,
    // each stall is a lost worker, not a bad job: allow several before BullMQ gives up on it
    maxStalledCount: 5,
  })
  for (const w of [fileWorker, trainingWorker]) {
    w.on('failed', (job, err) => log.warn({ queueJob: job?.id, err: err.message }, 'queue job failed'))
    w.on('error', (err) => log.warn({ err: err.message }, 'worker error'))
  }

  // Cancel and pause broadcasts: whichever worker process owns the job forwards it to the training process.
  const subscriber = redis.duplicate()
  subscriber.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'))
  const pauses = pauseChannel(config.queuePrefix)
  await subscriber.subscribe(cancelChannel(config.queuePrefix), pauses)
  subscriber.on('message', (channel, jobId: string) =>
    channel === pauses ? activeTrainings.get(jobId)?.pause() : activeTrainings.get(jobId)?.cancel(),
  )

  // The database is the source of truth for cancel and pause too: a broadcast lost while Redis blinked is
  // caught here.
  const pollCancels = setInterval(async () => {
    if (!activeTrainings.size) return
    const rows = await db.fineTuningJob
      .findMany({
        where: {
          id: { in: [...activeTrainings.keys()] },
          OR: [{ status: 'cancelling' }, { status: 'running', statusReason: PAUSING }],
        },
        select: { id: true, status: true },
      })
      .catch(() => [])
    for (const r of rows)
      if (r.status === 'cancelling') activeTrainings.get(r.id)?.cancel()
      else activeTrainings.get(r.id)?.pause()
  }, 1000)

  const reconcile = async () => {
    const old = new Date(Date.now() - 5_000)
    const files = await db.file.findMany({
      where: { status: 'uploaded', deletedAt: null, createdAt: { lt: old } },
      take: 100,
    })
    for (const f of files) await enqueue(queues, 'files', { fileId: f.id }, f.id)
    const jobs = await db.fineTuningJob.findMany({ where: { status: 'queued', createdAt: { lt: old } }, take: 100 })
    // a job already waiting or running in a training queue stays where it is (no second copy elsewhere)
    for (const j of jobs) if (!(await inTrainingQueue(queues, j.id))) await enqueueTraining(deps, j)
    // Sweeps are driven from here (see src/modules/sweeps/sweep-scheduler.ts): this pass survives a worker
    // crash, so a trial that ended unseen, or waited for a project slot, starts on the next pass.
    await advanceRunningSweeps(deps)
    // webhook deliveries whose enqueue was lost, and finished jobs without their delivery rows
    await relayDeliveries(db, queues.webhooks, log)
    await db.idempotencyKey.deleteMany({ where: { createdAt: { lt: new Date(Date.now() - IDEMPOTENCY_TTL_MS) } } })
    const expired = await deleteExpiredFiles(deps)
    if (expired) log.info({ expired }, 'deleted files past their expires_after')
    // Uploads cut off by an API crash leave temporary files; no row points at them.
    const swept = await storage.sweepTmp(config.tmpMaxAgeMs)
    if (swept) log.info({ swept }, 'removed abandoned temporary uploads')
  }
  // A sweep's trial that ends in this process starts the sweep's next trial at once (the reconcile pass
  // above is the safety net when this process dies first).
  const stopSweepListener = onTransition((t) => {
    if (!isTerminal(t.to)) return
    void db.fineTuningJob
      .findUnique({ where: { id: t.jobId }, select: { sweepId: true } })
      .then((j) => (j?.sweepId ? advanceSweep(deps, j.sweepId) : false))
      .catch((err) =>
        log.warn({ err: err.message, jobId: t.jobId }, 'sweep advance failed; the reconcile pass retries'),
      )
  })

  // Once per cluster: every worker upserts the same scheduler (the last interval wins), and each
  // `reconcile` job runs on one worker.
  await queues.maintenance.upsertJobScheduler(
    'reconcile',
    { every: opts.reconcileEveryMs ?? config.reconcileIntervalMs },
    { name: QUEUE_REGISTRY.maintenance.job, data: { task: 'reconcile' }, opts: QUEUE_REGISTRY.maintenance.options },
  )
  const maintenanceWorker = consume('maintenance', config, async () => {
    await reconcile()
    return { ok: true }
  })
  maintenanceWorker.on('failed', (_job, err) => log.warn({ err: err.message }, 'reconcile failed'))
  maintenanceWorker.on('error', (err) => log.warn({ err: err.message }, 'maintenance worker error'))

  const webhookDispatcher = startWebhookDispatcher(deps, {
    timeoutMs: config.webhookTimeoutMs,
    policy: { allowPrivate: config.webhookAllowPrivate },
    concurrencyPerProject: config.webhookConcurrencyPerProject,
  })
  const evaluationWorker = startEvaluationWorker(deps)
  // Registered last: a worker listed as live is one that consumes its queues.
  const registry: RegistryHandle = await registerWorker(
    redis,
    config.queuePrefix,
    {
      backend: backend.backend,
      device: detectDevice(backend.backend),
      resource_class: config.workerResourceClass,
      capabilities: { ...backendCapabilities(backend.backend as Parameters<typeof backendCapabilities>[0]) },
    },
    config.workerHeartbeatMs,
    () => ({
      currentJobs: [...activeTrainings.keys()],
      jobThroughput: Object.fromEntries(jobThroughput),
      lastThroughput: lastThroughput(),
    }),
    (err) => log.warn({ err: err.message }, 'worker heartbeat failed'),
  )
  log.info(
    {
      queuePrefix: config.queuePrefix,
      concurrency: config.workerConcurrency,
      workerId: registry.id,
      resourceClass: config.workerResourceClass,
    },
    'worker started',
  )
  return {
    deps,
    backend,
    async close() {
      await registry.close()
      stopSweepListener()
      clearInterval(pollCancels)
      await maintenanceWorker.close()
      await webhookDispatcher.close()
      // Graceful: running trainings stop at the end of their batch and go back to the queue, to resume
      // from their last checkpoint on the next worker, without spending an attempt.
      for (const t of activeTrainings.values()) t.handBack()
      for (const child of activeEvaluations) child.kill('SIGKILL') // an evaluation is cheap to rerun
      await Promise.allSettled([fileWorker.close(), trainingWorker.close(), evaluationWorker.close(true)])
      train.closeIdle()
      await closeQueues(queues)
      subscriber.disconnect()
      redis.disconnect()
      await db.$disconnect()
    },
  }
}

// Run as a process (npm start forks this file; it can also run alone: `node dist/workers/worker.js`).
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '')) {
  const config = loadConfig()
  const handle = await startWorker(config)
  // Tell `npm start` (our parent, if any) that the worker is ready and what it runs on.
  process.send?.({ type: 'worker-ready', backend: handle.backend.backend })
  let closing = false
  const shutdown = async (signal: string) => {
    if (closing) return
    closing = true
    handle.deps.log.info({ signal }, 'worker shutting down')
    await handle.close()
    process.exit(0)
  }
  process.on('SIGTERM', () => void shutdown('SIGTERM'))
  process.on('SIGINT', () => void shutdown('SIGINT'))
  // Started by `npm start`: when the parent dies, so do we.
  process.on('disconnect', () => void shutdown('parent exited'))
}

// Producers' side of the queues: one function per kind of work, used by the services, the lifecycle
// module and the reconciler alike, so queue choice, job name, payload and options are written once.
// Redis-down policy for work whose row is the source of truth (training jobs, webhook deliveries): the
// enqueue is best-effort and the reconciler adds what is missing when Redis is back.
import type { Queue } from 'bullmq'
import type { Redis } from 'ioredis'
import type { ResourceClass } from '../config.js'
import { jobResourceClass, liveResourceClasses } from '../modules/workers/resource-class.js'
import { DELIVERY_JOB_OPTIONS, type DeliveryPayload, TRAINING_JOB_OPTIONS, type TrainingPayload } from './catalog.js'

export interface TrainingQueues {
  training: Queue<TrainingPayload>
  trainingGpu: Queue<TrainingPayload>
}

interface Log {
  warn(obj: object, msg?: string): void
}

/** What a training enqueue needs: the producers, Redis (the worker registry) and the queue prefix. */
export interface TrainingEnqueueDeps {
  queues: TrainingQueues
  log: Log
  redis: Redis
  config: { queuePrefix: string }
}

type RoutedJob = { id: string; resourceClass?: 'auto' | 'cpu' | 'gpu' | null }

/** The resource class a job goes to now (its `resource_class`; `auto` by the live workers). */
export async function trainingClassFor(d: TrainingEnqueueDeps, job: RoutedJob): Promise<ResourceClass> {
  if (job.resourceClass === 'cpu' || job.resourceClass === 'gpu') return job.resourceClass
  return jobResourceClass(job, await liveResourceClasses(d.redis, d.config.queuePrefix).catch(() => new Set<string>()))
}

/** Whether the job waits or runs in either training queue now (a finished queue job does not count). */
export async function inTrainingQueue(queues: TrainingQueues, jobId: string): Promise<boolean> {
  for (const q of [queues.training, queues.trainingGpu]) {
    const state = await q.getJobState(jobId)
    if (state !== 'unknown' && state !== 'completed' && state !== 'failed') return true
  }
  return false
}

/**
 * The queue job id is the fine-tuning job id, so a second enqueue of the same job is a no-op. The queue is
 * the one of the job's resource class, decided now (`training` for cpu, `training-gpu`).
 */
export async function enqueueTraining(d: TrainingEnqueueDeps, job: RoutedJob): Promise<boolean> {
  const { queues, log } = d
  try {
    const queue = (await trainingClassFor(d, job)) === 'gpu' ? queues.trainingGpu : queues.training
    // A finished queue job of the same id would make the add a no-op: a resumed job (its last queue job
    // completed when it paused) or one whose processor skipped it while it was paused. The row says
    // queued, so that queue job is spent: it goes, and a new one is added.
    const previous = await queue.getJob(job.id)
    if (previous && ((await previous.isCompleted()) || (await previous.isFailed()))) await previous.remove()
    await queue.add('train', { jobId: job.id }, { ...TRAINING_JOB_OPTIONS, jobId: job.id })
    return true
  } catch (err) {
    log.warn({ err: (err as Error).message, jobId: job.id }, 'could not enqueue job; the reconciler will')
    return false
  }
}

/** One `deliver` job per delivery row; the queue job id is the row id, so adding twice is harmless. */
export async function enqueueDeliveries(webhooks: Queue<DeliveryPayload>, log: Log, ids: string[]): Promise<void> {
  if (!ids.length) return
  try {
    await webhooks.addBulk(
      ids.map((deliveryId) => ({
        name: 'deliver',
        data: { deliveryId },
        opts: { ...DELIVERY_JOB_OPTIONS, jobId: deliveryId },
      })),
    )
  } catch (err) {
    log.warn(
      { err: (err as Error).message, deliveries: ids.length },
      'could not enqueue webhook deliveries; the reconciler will',
    )
  }
}

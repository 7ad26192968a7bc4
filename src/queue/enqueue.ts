// Producers' side of the queues: one function per kind of work, used by the services, the lifecycle
// module and the reconciler alike, so queue choice, job name, payload and options are written once.
// Redis-down policy for work whose row is the source of truth (training jobs, webhook deliveries): the
// enqueue is best-effort and the reconciler adds what is missing when Redis is back.
import type { Queue } from 'bullmq'
import { jobResourceClass } from '../modules/workers/resource-class.js'
import { DELIVERY_JOB_OPTIONS, type DeliveryPayload, TRAINING_JOB_OPTIONS, type TrainingPayload } from './catalog.js'

export interface TrainingQueues {
  training: Queue<TrainingPayload>
  trainingGpu: Queue<TrainingPayload>
}

interface Log {
  warn(obj: object, msg?: string): void
}

/**
 * The queue job id is the fine-tuning job id, so a second enqueue of the same job is a no-op. The queue is
 * the one of the job's resource class (`training` for cpu, `training-gpu`).
 */
export async function enqueueTraining(queues: TrainingQueues, log: Log, job: { id: string }): Promise<boolean> {
  try {
    const queue = jobResourceClass(job) === 'gpu' ? queues.trainingGpu : queues.training
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

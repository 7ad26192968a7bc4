// The typed queue catalogue: queue names, job names and payloads in one place. The API only produces;
// workers consume. Payloads carry ids only, never bytes or secrets, and are checked on both sides.
import type { ConnectionOptions, JobsOptions } from 'bullmq'

export const QUEUES = {
  /** fine-tuning jobs: payload { jobId }, queue job id = fine-tuning job id (enqueueing twice is harmless) */
  training: 'training',
  /** fine-tuning jobs that need a gpu worker (WORKER_RESOURCE_CLASS=gpu); `training` is the cpu class's queue */
  trainingGpu: 'training-gpu',
  /** dataset validation: payload { fileId }, queue job id = file id */
  files: 'files',
  /** model evaluations: payload { evaluationId }, queue job id = evaluation id */
  evaluations: 'evaluations',
  /** webhook deliveries: payload { deliveryId }, queue job id = delivery id; the delivery row is the record */
  webhooks: 'webhooks',
} as const

export type QueueName = (typeof QUEUES)[keyof typeof QUEUES]

export interface TrainingPayload {
  jobId: string
}
export interface FilePayload {
  fileId: string
}

const ID = /^(ftjob|file)-[a-z0-9]{24}$/

export function parseTrainingPayload(data: unknown): TrainingPayload {
  const jobId = (data as { jobId?: unknown })?.jobId
  if (typeof jobId !== 'string' || !ID.test(jobId)) throw new Error(`bad training payload: ${JSON.stringify(data)}`)
  return { jobId }
}

export function parseFilePayload(data: unknown): FilePayload {
  const fileId = (data as { fileId?: unknown })?.fileId
  if (typeof fileId !== 'string' || !ID.test(fileId)) throw new Error(`bad file payload: ${JSON.stringify(data)}`)
  return { fileId }
}

/** Training jobs are not retried by BullMQ on their own failure: a failed job is final unless a user retries it. */
export const TRAINING_JOB_OPTIONS: JobsOptions = {
  attempts: 1,
  removeOnComplete: { age: 24 * 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600 },
}

/** Validation is cheap and idempotent: retry infrastructure failures with backoff. */
export const FILE_JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 1000 },
  removeOnComplete: { age: 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600 },
}

/** Redis channel on which cancel requests are broadcast to every worker process. */
export const cancelChannel = (prefix: string) => `${prefix}:cancel`
/** Pause broadcasts, as cancel's: the worker that owns the job tells its training process to checkpoint and stop. */
export const pauseChannel = (prefix: string) => `${prefix}:pause`

export function redisConnection(redisUrl: string): ConnectionOptions {
  const u = new URL(redisUrl)
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    username: u.username || undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : undefined,
    tls: u.protocol === 'rediss:' ? {} : undefined,
    // BullMQ workers need this; producers fail fast instead of queueing commands forever
    maxRetriesPerRequest: null,
  }
}

/** Payload of the `evaluations` queue. */
export interface EvaluationPayload {
  evaluationId: string
}

export function parseEvaluationPayload(data: unknown): EvaluationPayload {
  const evaluationId = (data as { evaluationId?: unknown })?.evaluationId
  if (typeof evaluationId !== 'string' || !/^eval-[a-z0-9]{24}$/.test(evaluationId))
    throw new Error(`bad evaluation payload: ${JSON.stringify(data)}`)
  return { evaluationId }
}

/** An evaluation is a pure function of a model and a file: retry infrastructure failures, twice. */
export const EVALUATION_JOB_OPTIONS: JobsOptions = {
  attempts: 2,
  backoff: { type: 'exponential', delay: 2000 },
  removeOnComplete: { age: 24 * 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600 },
}

/** Payload of the `webhooks` queue. */
export interface DeliveryPayload {
  deliveryId: string
}

export function parseDeliveryPayload(data: unknown): DeliveryPayload {
  const deliveryId = (data as { deliveryId?: unknown })?.deliveryId
  if (typeof deliveryId !== 'string' || !/^whdel-[a-z0-9]{24}$/.test(deliveryId))
    throw new Error(`bad delivery payload: ${JSON.stringify(data)}`)
  return { deliveryId }
}

/**
 * The delivery row counts attempts and decides when to give up (WEBHOOK_MAX_ATTEMPTS); BullMQ only has
 * to run the job again after the backoff the processor asks for, so its own limit is set above ours.
 * Finished jobs are removed: the row is the record, and a pending row without a queue job is how the
 * reconciler knows an enqueue was lost.
 */
export const DELIVERY_JOB_OPTIONS: JobsOptions = {
  attempts: 50,
  backoff: { type: 'webhook' },
  removeOnComplete: true,
  removeOnFail: true,
}

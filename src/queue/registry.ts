// The typed queue registry: every BullMQ queue with its job name, payload parser and job options, in one
// table (Infisical's queue map). Producers are opened from it (`openQueues`), work is added through it
// (`enqueue`), workers consume through it (`consume`: the payload is checked before the processor sees
// it), and admin queue health, Bull Board and the Prometheus gauge list its queues, so none of them can
// forget one.
import { type ConnectionOptions, type Job, type JobsOptions, Queue, Worker, type WorkerOptions } from 'bullmq'
import {
  DELIVERY_JOB_OPTIONS,
  EVALUATION_JOB_OPTIONS,
  FILE_JOB_OPTIONS,
  parseDeliveryPayload,
  parseEvaluationPayload,
  parseFilePayload,
  parseTrainingPayload,
  redisConnection,
  TRAINING_JOB_OPTIONS,
} from './catalog.js'

/** Cluster-wide housekeeping (reconcile): one scheduled job, run by whichever worker takes it. */
export interface MaintenancePayload {
  task: 'reconcile'
}

export function parseMaintenancePayload(data: unknown): MaintenancePayload {
  if ((data as { task?: unknown })?.task !== 'reconcile')
    throw new Error(`bad maintenance payload: ${JSON.stringify(data)}`)
  return { task: 'reconcile' }
}

const MAINTENANCE_JOB_OPTIONS: JobsOptions = {
  attempts: 1,
  removeOnComplete: { count: 10 },
  removeOnFail: { count: 50 },
}

interface QueueSpec<P> {
  /** the BullMQ queue name (keys live under QUEUE_PREFIX) */
  readonly name: string
  /** the one job name added to it */
  readonly job: string
  /** checks a payload when it is added and again when a worker takes it */
  readonly parse: (data: unknown) => P
  readonly options: JobsOptions
  /** who consumes it */
  readonly consumer: string
}

const spec = <P>(s: QueueSpec<P>) => s

export const QUEUE_REGISTRY = {
  training: spec({
    name: 'training',
    job: 'train',
    parse: parseTrainingPayload,
    options: TRAINING_JOB_OPTIONS,
    consumer: 'workers with WORKER_RESOURCE_CLASS=cpu',
  }),
  trainingGpu: spec({
    name: 'training-gpu',
    job: 'train',
    parse: parseTrainingPayload,
    options: TRAINING_JOB_OPTIONS,
    consumer: 'workers with WORKER_RESOURCE_CLASS=gpu',
  }),
  files: spec({
    name: 'files',
    job: 'validate-file',
    parse: parseFilePayload,
    options: FILE_JOB_OPTIONS,
    consumer: 'every worker',
  }),
  evaluations: spec({
    name: 'evaluations',
    job: 'evaluate',
    parse: parseEvaluationPayload,
    options: EVALUATION_JOB_OPTIONS,
    consumer: 'every worker',
  }),
  webhooks: spec({
    name: 'webhooks',
    job: 'deliver',
    parse: parseDeliveryPayload,
    options: DELIVERY_JOB_OPTIONS,
    consumer: 'every worker',
  }),
  maintenance: spec({
    name: 'maintenance',
    job: 'reconcile',
    parse: parseMaintenancePayload,
    options: MAINTENANCE_JOB_OPTIONS,
    consumer: 'every worker (a job scheduler adds one job per interval for the whole cluster)',
  }),
} as const

export type QueueKey = keyof typeof QUEUE_REGISTRY
export type PayloadOf<K extends QueueKey> = ReturnType<(typeof QUEUE_REGISTRY)[K]['parse']>
export type Queues = { [K in QueueKey]: Queue<PayloadOf<K>> }
export const QUEUE_KEYS = Object.keys(QUEUE_REGISTRY) as QueueKey[]
/** Every queue name, in registry order. */
export const QUEUE_NAMES = QUEUE_KEYS.map((k) => QUEUE_REGISTRY[k].name)

/**
 * Opens a producer for every queue. `failFast`: commands fail at once while Redis is down (the API must
 * answer, not wait); workers keep BullMQ's default of waiting for Redis.
 */
export function openQueues(
  config: { redisUrl: string; queuePrefix: string },
  opts?: { failFast?: boolean; onError?: (err: Error) => void },
): Queues
export function openQueues<K extends QueueKey>(
  config: { redisUrl: string; queuePrefix: string },
  opts: { failFast?: boolean; onError?: (err: Error) => void; only: K[] },
): Pick<Queues, K>
export function openQueues(
  config: { redisUrl: string; queuePrefix: string },
  opts: { failFast?: boolean; onError?: (err: Error) => void; only?: QueueKey[] } = {},
): Partial<Queues> {
  const connection: ConnectionOptions = opts.failFast
    ? { ...redisConnection(config.redisUrl), maxRetriesPerRequest: 1, enableOfflineQueue: false }
    : redisConnection(config.redisUrl)
  const out = {} as Record<QueueKey, Queue>
  for (const k of opts.only ?? QUEUE_KEYS) {
    const q = new Queue(QUEUE_REGISTRY[k].name, { connection, prefix: config.queuePrefix })
    q.on('error', (err) => opts.onError?.(err))
    out[k] = q
  }
  return out as unknown as Queues
}

export async function closeQueues(queues: Partial<Queues>): Promise<void> {
  await Promise.allSettled(Object.values(queues).map((q) => (q as Queue).close()))
}

/** Adds one job of the queue's kind; the payload is checked, the queue job id is `jobId` (idempotent adds). */
export async function enqueue<K extends QueueKey>(
  queues: Pick<Queues, K>,
  key: K,
  payload: PayloadOf<K>,
  jobId: string,
  extra: JobsOptions = {},
) {
  const s = QUEUE_REGISTRY[key]
  const data = s.parse(payload) as PayloadOf<K>
  return (queues[key] as Queue<any>).add(s.job, data, { ...s.options, ...extra, jobId })
}

/**
 * Consumes a queue: the processor gets the parsed payload (a malformed one fails the job without
 * retries) and the BullMQ job, token and abort signal.
 */
export function consume<K extends QueueKey, R>(
  key: K,
  config: { redisUrl: string; queuePrefix: string },
  processor: (payload: PayloadOf<K>, job: Job, token?: string, signal?: AbortSignal) => Promise<R>,
  opts: Omit<WorkerOptions, 'connection' | 'prefix'> = {},
): Worker {
  const s = QUEUE_REGISTRY[key]
  return new Worker(s.name, (job, token, signal) => processor(s.parse(job.data) as PayloadOf<K>, job, token, signal), {
    ...opts,
    connection: redisConnection(config.redisUrl),
    prefix: config.queuePrefix,
  })
}

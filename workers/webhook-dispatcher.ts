// Sends webhook deliveries as BullMQ jobs: one `deliver` job per `webhook_deliveries` row (queue job id =
// row id), added by the lifecycle module right after the transaction that wrote the row (the outbox) and,
// for any enqueue that was lost, by the relay pass below. The row is the record: the processor counts the
// attempt on it, sends (src/modules/webhooks/safe-delivery.ts: address policy, timeouts), writes the outcome and, when it should retry, throws with the
// delay it wants so BullMQ runs the job again after that backoff. BullMQ gives each job to one worker at a
// time, so two worker processes never send the same delivery at once; a worker that dies mid-send leaves
// the job to stall and be run again (at least once: receivers dedupe on `refit-webhook-id`).
//
// Fairness: a delivery first takes one of its project's WEBHOOK_CONCURRENCY_PER_PROJECT slots in Redis
// (src/queue/project-slots.ts, shared by every worker process); with none free it goes back to delayed
// without counting an attempt, so a tenant whose endpoint hangs holds at most that many of the workers'
// delivery slots and every other project's deliveries go out meanwhile.
//
// The relay pass (the cluster's reconcile job runs it; `intervalMs` runs it here too): (a) records deliveries for terminal jobs that have none (rows
// finished before the outbox existed), (b) adds a queue job for every pending row (adding an existing job
// id is a no-op, so only lost enqueues are added).
import { DelayedError, type Queue } from 'bullmq'
import { Redis } from 'ioredis'
import type { Config } from '../src/config.js'
import type { Db } from '../src/db/client.js'
import { type AddressPolicy, type DeliveryResult, sendWebhook } from '../src/modules/webhooks/safe-delivery.js'
import { recordJobTerminal, signPayload } from '../src/modules/webhooks/webhooks-service.js'
import type { DeliveryPayload } from '../src/queue/catalog.js'
import { enqueueDeliveries } from '../src/queue/enqueue.js'
import { slotKey, slotRetryDelayMs, takeSlot } from '../src/queue/project-slots.js'
import { closeQueues, consume, openQueues } from '../src/queue/registry.js'
import type { Logger } from './deps.js'

/** Delay after the n-th failed attempt (index n-1). */
export const WEBHOOK_BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]
/** A delivery is `failed` after this many attempts. */
export const WEBHOOK_MAX_ATTEMPTS = 6

export interface WebhookDispatcherOptions {
  /** run the relay pass every `intervalMs` in this process too (default: never; the reconcile job runs it) */
  intervalMs?: number
  /** per-request timeout (default 10 s) */
  timeoutMs?: number
  /** deliveries sent in parallel by this process (default 20) */
  batchSize?: number
  backoffMs?: number[]
  maxAttempts?: number
  /** which addresses a delivery may connect to (default: public only) */
  policy?: AddressPolicy
  /** deliveries of one project in flight at once across all processes (WEBHOOK_CONCURRENCY_PER_PROJECT, default 2) */
  concurrencyPerProject?: number
}

/** A delivery as the processor claimed it, joined with its webhook. */
interface ClaimedDelivery {
  id: string
  webhook_id: string
  job_id: string
  payload: unknown
  attempts: number
  url: string
  secret: string
  deleted: boolean
}

/** One signed POST of the delivery's payload, through the safe sender. */
async function send(d: ClaimedDelivery, timeoutMs: number, policy: AddressPolicy, signal: AbortSignal) {
  const body = JSON.stringify(d.payload)
  const t = Math.floor(Date.now() / 1000)
  return sendWebhook({
    url: d.url,
    headers: {
      'content-type': 'application/json',
      'user-agent': 'Refit-Webhooks/1',
      'refit-webhook-id': d.id,
      'refit-signature': signPayload(d.secret, body, t),
    },
    body,
    timeoutMs,
    policy,
    signal,
  })
}

/** What the dispatcher needs from the worker: the database, a logger, the config (Redis, queue prefix). */
export interface WebhookDispatcherDeps {
  db: Db
  log: Logger
  config: Pick<Config, 'redisUrl' | 'queuePrefix'>
  /** for the per-project slots; without it the dispatcher opens (and closes) its own connection */
  redis?: Redis
}

/** A failed attempt that should be retried after `retryInMs` (read by the worker's backoff strategy). */
class RetryLater extends Error {
  constructor(
    readonly retryInMs: number,
    message: string,
  ) {
    super(message)
  }
}

/** Jobs that finished in the last 24 h, for which a subscribed webhook has no delivery row yet. */
async function unrecordedJobs(db: Db): Promise<string[]> {
  const rows = await db.$queryRaw<{ id: string }[]>`
    SELECT DISTINCT j.id
    FROM fine_tuning_jobs j
    JOIN webhooks w ON w.project_id = j.project_id AND w.deleted_at IS NULL AND j.status::text = ANY (w.events)
      AND w.created_at <= COALESCE(j.finished_at, j.updated_at)
    WHERE j.status IN ('succeeded', 'failed', 'cancelled')
      AND COALESCE(j.finished_at, j.updated_at) > now() - interval '24 hours'
      AND NOT EXISTS (
        SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.job_id = j.id AND d.event = j.status::text
      )
    LIMIT 100`
  return rows.map((r) => r.id)
}

/** One relay pass (see the header); returns how many rows it recorded and how many it (re)enqueued. */
export async function relayDeliveries(db: Db, webhooks: Queue<DeliveryPayload>, log: Logger) {
  let recorded = 0
  for (const jobId of await unrecordedJobs(db)) {
    const n = await recordJobTerminal(db, jobId)
    if (n) log.info({ jobId, deliveries: n }, 'recorded webhook deliveries for a finished job')
    recorded += n
  }
  const pending = await db.webhookDelivery.findMany({
    where: { status: 'pending' },
    select: { id: true },
    orderBy: { createdAt: 'asc' },
    take: 500,
  })
  await enqueueDeliveries(
    webhooks,
    log,
    pending.map((p) => p.id),
  )
  return { recorded, pending: pending.length }
}

/** Starts the delivery worker and the relay loop; `close()` aborts in-flight requests and waits. */
export function startWebhookDispatcher(
  deps: WebhookDispatcherDeps,
  opts: WebhookDispatcherOptions = {},
): { close(): Promise<void> } {
  const { db, log, config } = deps
  const intervalMs = opts.intervalMs
  const timeoutMs = opts.timeoutMs ?? 10_000
  const backoff = opts.backoffMs ?? WEBHOOK_BACKOFF_MS
  const maxAttempts = opts.maxAttempts ?? WEBHOOK_MAX_ATTEMPTS
  const policy = opts.policy ?? { allowPrivate: false }
  const perProject = opts.concurrencyPerProject ?? 2
  const ownRedis = deps.redis ? null : new Redis(config.redisUrl, { maxRetriesPerRequest: null })
  const redis = deps.redis ?? (ownRedis as Redis)
  const stop = new AbortController()
  const { webhooks: queue } = intervalMs
    ? openQueues(config, {
        only: ['webhooks'],
        onError: (err) => log.warn({ err: err.message }, 'webhooks queue error'),
      })
    : ({} as { webhooks?: undefined })

  /** Writes the outcome on the row; returns the delay before the next attempt, or null when done. */
  async function finish(d: ClaimedDelivery, outcome: DeliveryResult): Promise<number | null> {
    if (outcome.ok) {
      await db.$executeRaw`
        UPDATE webhook_deliveries
        SET status = 'delivered', delivered_at = now(), next_attempt_at = NULL, response_status = ${outcome.status},
            duration_ms = ${outcome.durationMs}
        WHERE id = ${d.id} AND attempts = ${d.attempts} AND status = 'pending'`
      log.info(
        { deliveryId: d.id, webhookId: d.webhook_id, jobId: d.job_id, attempt: d.attempts, status: outcome.status },
        'webhook delivered',
      )
      return null
    }
    const giveUp = d.attempts >= maxAttempts
    const retryInMs = giveUp ? null : backoff[Math.min(d.attempts, backoff.length) - 1]
    if (giveUp)
      await db.$executeRaw`
        UPDATE webhook_deliveries
        SET status = 'failed', next_attempt_at = NULL, response_status = ${outcome.status}, last_error = ${outcome.error},
            error_class = ${outcome.errorClass}, duration_ms = ${outcome.durationMs}
        WHERE id = ${d.id} AND attempts = ${d.attempts} AND status = 'pending'`
    else
      await db.$executeRaw`
        UPDATE webhook_deliveries
        SET next_attempt_at = now() + ${retryInMs}::int * interval '1 millisecond',
            response_status = ${outcome.status}, last_error = ${outcome.error},
            error_class = ${outcome.errorClass}, duration_ms = ${outcome.durationMs}
        WHERE id = ${d.id} AND attempts = ${d.attempts} AND status = 'pending'`
    log.warn(
      {
        deliveryId: d.id,
        webhookId: d.webhook_id,
        jobId: d.job_id,
        attempt: d.attempts,
        status: outcome.status,
        errorClass: outcome.errorClass,
        error: outcome.error,
        durationMs: outcome.durationMs,
        retryInMs,
      },
      giveUp
        ? `webhook delivery failed after ${d.attempts} attempts`
        : `webhook delivery failed; retrying in ${retryInMs} ms`,
    )
    return retryInMs
  }

  const worker = consume(
    'webhooks',
    config,
    async ({ deliveryId }, job, token) => {
      const [target] = await db.$queryRaw<{ project_id: string }[]>`
        SELECT w.project_id FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
        WHERE d.id = ${deliveryId} AND d.status = 'pending'`
      if (!target) return { skipped: true }
      const slot = await takeSlot(
        redis,
        slotKey(config.queuePrefix, 'webhooks', target.project_id),
        deliveryId,
        perProject,
      )
      if (!slot) {
        // The project has its deliveries in flight: wait behind them without holding a worker slot.
        await job.moveToDelayed(Date.now() + slotRetryDelayMs(), token)
        throw new DelayedError()
      }
      try {
        return await deliver(deliveryId)
      } finally {
        await slot.release()
      }
    },
    {
      concurrency: opts.batchSize ?? 20,
      settings: { backoffStrategy: (_made, _type, err) => (err instanceof RetryLater ? err.retryInMs : 1_000) },
    },
  )
  worker.on('error', (err) => log.warn({ err: err.message }, 'webhook worker error'))

  /** One attempt of a pending delivery, its project slot held. */
  async function deliver(deliveryId: string) {
    // Counts the attempt on the row; a row no longer pending (delivered, given up, webhook deleted) is skipped.
    const [d] = await db.$queryRaw<ClaimedDelivery[]>`
        UPDATE webhook_deliveries d
        SET attempts = d.attempts + 1, next_attempt_at = NULL
        FROM webhooks w
        WHERE d.id = ${deliveryId} AND w.id = d.webhook_id AND d.status = 'pending'
        RETURNING d.id, d.webhook_id, d.job_id, d.payload, d.attempts, w.url, w.secret, (w.deleted_at IS NOT NULL) AS deleted`
    if (!d) return { skipped: true }
    if (d.deleted) {
      await db.$executeRaw`
          UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', error_class = 'webhook_deleted'
          WHERE id = ${d.id} AND status = 'pending'`
      return { skipped: 'webhook deleted' }
    }
    const retryInMs = await finish(d, await send(d, timeoutMs, policy, stop.signal))
    if (retryInMs !== null) throw new RetryLater(retryInMs, `attempt ${d.attempts} failed`)
    return { attempts: d.attempts }
  }

  let timer: NodeJS.Timeout | null = null
  let running: Promise<void> = Promise.resolve()
  const loop = () => {
    if (!queue || !intervalMs) return
    running = relayDeliveries(db, queue, log)
      .then(() => {})
      .catch((err) => log.warn({ err: (err as Error).message }, 'webhook relay failed'))
      .finally(() => {
        if (!stop.signal.aborted) timer = setTimeout(loop, intervalMs)
      })
  }
  loop()

  return {
    async close() {
      stop.abort()
      if (timer) clearTimeout(timer)
      const closing = worker.close()
      await running
      await closing
      if (queue) await closeQueues({ webhooks: queue })
      ownRedis?.disconnect()
    },
  }
}

// Sends webhook deliveries. Each tick it (a) records deliveries for recently finished jobs that have none
// yet (so a terminal transition whose recordJobTerminal call was missed is still announced) and (b)
// claims due deliveries with FOR UPDATE SKIP LOCKED, POSTs them signed, and records the outcome.
//
// A claim is a lease, not a held lock: the claiming UPDATE counts the attempt and pushes next_attempt_at
// past the send timeout, then commits, so no connection stays open during the HTTP call and two worker
// processes never send the same delivery at once. A worker that dies mid-send leaves the lease to
// expire and another worker retries (at-least-once; receivers dedupe on `refit-webhook-id`). The outcome
// update is fenced on the attempt number, so a stale sender cannot overwrite a newer attempt.
// Times come from PostgreSQL's clock only, so worker clocks cannot skew the schedule.
import type { Db } from '../src/db/client.js'
import { type AddressPolicy, type DeliveryResult, sendWebhook } from '../src/modules/webhooks/safe-delivery.js'
import { recordJobTerminal, signPayload } from '../src/modules/webhooks/webhooks-service.js'
import type { WorkerDeps } from './deps.js'

/** Delay after the n-th failed attempt (index n-1). */
export const WEBHOOK_BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]
/** A delivery is `failed` after this many attempts. */
export const WEBHOOK_MAX_ATTEMPTS = 6

export interface WebhookDispatcherOptions {
  /** pause between ticks (default 1000 ms) */
  intervalMs?: number
  /** per-request timeout (default 10 s) */
  timeoutMs?: number
  /** deliveries claimed per tick and sent in parallel (default 20) */
  batchSize?: number
  backoffMs?: number[]
  maxAttempts?: number
  /** which addresses a delivery may connect to (default: public only) */
  policy?: AddressPolicy
}

/** What the dispatcher needs from the worker: the database and a logger. */
export type WebhookDispatcherDeps = Pick<WorkerDeps, 'db' | 'log'>

interface Claimed {
  id: string
  webhook_id: string
  job_id: string
  payload: unknown
  attempts: number
  url: string
  secret: string
  deleted: boolean
}

type Outcome = DeliveryResult

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

async function claim(db: Db, batchSize: number, leaseMs: number): Promise<Claimed[]> {
  return db.$queryRaw<Claimed[]>`
    WITH due AS (
      SELECT id FROM webhook_deliveries
      WHERE status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= now())
      ORDER BY next_attempt_at NULLS FIRST, created_at
      LIMIT ${batchSize}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + ${leaseMs}::int * interval '1 millisecond'
    FROM due, webhooks w
    WHERE d.id = due.id AND w.id = d.webhook_id
      AND d.status = 'pending' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())
    RETURNING d.id, d.webhook_id, d.job_id, d.payload, d.attempts, w.url, w.secret, (w.deleted_at IS NOT NULL) AS deleted`
}

async function send(d: Claimed, timeoutMs: number, policy: AddressPolicy, signal: AbortSignal) {
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

/** Starts the dispatch loop; `close()` aborts in-flight requests and waits for the current tick. */
export function startWebhookDispatcher(
  deps: WebhookDispatcherDeps,
  opts: WebhookDispatcherOptions = {},
): { close(): Promise<void> } {
  const { db, log } = deps
  const intervalMs = opts.intervalMs ?? 1000
  const timeoutMs = opts.timeoutMs ?? 10_000
  const batchSize = opts.batchSize ?? 20
  const backoff = opts.backoffMs ?? WEBHOOK_BACKOFF_MS
  const maxAttempts = opts.maxAttempts ?? WEBHOOK_MAX_ATTEMPTS
  const policy = opts.policy ?? { allowPrivate: false }
  // Long enough that a send (bounded by the timeout) always ends before another worker may reclaim it.
  const leaseMs = timeoutMs + 30_000
  const stop = new AbortController()
  let timer: NodeJS.Timeout | null = null
  let running: Promise<void> = Promise.resolve()

  async function finish(d: Claimed, outcome: Outcome) {
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
      return
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
  }

  async function deliver(d: Claimed) {
    try {
      if (d.deleted) {
        await db.$executeRaw`
          UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, last_error = 'webhook deleted', error_class = 'webhook_deleted'
          WHERE id = ${d.id} AND status = 'pending'`
        return
      }
      await finish(d, await send(d, timeoutMs, policy, stop.signal))
    } catch (err) {
      // The lease expires and the delivery is tried again.
      log.warn({ deliveryId: d.id, err: (err as Error).message }, 'webhook delivery bookkeeping failed')
    }
  }

  async function tick() {
    try {
      for (const jobId of await unrecordedJobs(db)) {
        const n = await recordJobTerminal(db, jobId)
        if (n) log.info({ jobId, deliveries: n }, 'recorded webhook deliveries for a finished job')
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'webhook sweep failed')
    }
    while (!stop.signal.aborted) {
      let batch: Claimed[]
      try {
        batch = await claim(db, batchSize, leaseMs)
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'webhook claim failed')
        return
      }
      await Promise.all(batch.map(deliver))
      if (batch.length < batchSize) return
    }
  }

  const loop = () => {
    running = tick()
      .catch((err) => log.error({ err: (err as Error).message }, 'webhook dispatcher tick failed'))
      .finally(() => {
        if (!stop.signal.aborted) timer = setTimeout(loop, intervalMs)
      })
  }
  loop()

  return {
    async close() {
      stop.abort()
      if (timer) clearTimeout(timer)
      await running
    },
  }
}

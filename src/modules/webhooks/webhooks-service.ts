// Per-project webhooks for job terminal states. A delivery row is written once per (webhook, job, event)
// in the transaction that finishes the job (the lifecycle's outbox, jobs/lifecycle/outbox.ts; the unique
// index makes recording idempotent); the worker's dispatcher sends it, signed, and retries with backoff. Only webhooks that existed when the job finished are notified, so a
// new webhook does not replay past jobs.
import { createHmac, randomBytes } from 'node:crypto'
import type { Config } from '../../config.js'
import type { Db } from '../../db/client.js'
import { AppError, notFound } from '../../errors.js'
import type { Webhook, WebhookDelivery } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { recordDeliveries } from '../jobs/lifecycle/outbox.js'
import { TERMINAL } from '../jobs/lifecycle/transitions.js'
import { type AddressPolicy, assertPublicWebhookUrl, type DeliveryErrorClass, type Resolver } from './safe-delivery.js'

/** The job statuses a webhook can subscribe to. */
export const WEBHOOK_EVENTS = TERMINAL
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number]

export interface CreateWebhookBody {
  url: string
  events?: WebhookEvent[]
}

/** The wire object of a webhook; the secret is only added by the create route. */
export function presentWebhook(w: Webhook) {
  return {
    id: w.id,
    object: 'webhook' as const,
    url: w.url,
    events: w.events as WebhookEvent[],
    created_at: unixSeconds(w.createdAt)!,
  }
}

export function presentDelivery(d: WebhookDelivery) {
  return {
    id: d.id,
    object: 'webhook.delivery' as const,
    webhook_id: d.webhookId,
    job_id: d.jobId,
    event: d.event as WebhookEvent,
    status: d.status,
    attempts: d.attempts,
    response_status: d.responseStatus,
    last_error: d.lastError,
    error_class: d.errorClass as DeliveryErrorClass | 'webhook_deleted' | null,
    duration_ms: d.durationMs,
    created_at: unixSeconds(d.createdAt)!,
    delivered_at: unixSeconds(d.deliveredAt),
    next_attempt_at: d.status === 'pending' ? unixSeconds(d.nextAttemptAt) : null,
  }
}

/** Accepts an absolute http(s) URL without credentials; anything else is `invalid_webhook_url`. */
export function parseWebhookUrl(raw: string): URL {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new AppError('invalid_webhook_url', 'url must be an absolute http or https URL.', { param: 'url' })
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new AppError('invalid_webhook_url', `url must use http or https, not ${url.protocol.slice(0, -1)}.`, {
      param: 'url',
    })
  if (url.username || url.password)
    throw new AppError(
      'invalid_webhook_url',
      'url must not carry credentials; authenticate deliveries with the signing secret.',
      { param: 'url' },
    )
  if (!url.hostname) throw new AppError('invalid_webhook_url', 'url has no host.', { param: 'url' })
  return url
}

/** What creating a webhook is allowed to do: the address policy and the per-project cap. */
export interface WebhookRules {
  policy: AddressPolicy
  /** MAX_WEBHOOKS_PER_PROJECT */
  maxPerProject: number
}

/** The rules in force, from the app's config and resolver. */
export function webhookRules(app: { config: Config; webhookResolver: Resolver }): WebhookRules {
  return {
    policy: { allowPrivate: app.config.webhookAllowPrivate, resolve: app.webhookResolver },
    maxPerProject: app.config.maxWebhooksPerProject,
  }
}

export async function createWebhook(db: Db, projectId: string, body: CreateWebhookBody, rules: WebhookRules) {
  const url = parseWebhookUrl(body.url)
  await assertPublicWebhookUrl(url, rules.policy)
  const events = body.events ?? [...WEBHOOK_EVENTS]
  const webhook = await db.$transaction(async (tx) => {
    // Count-then-insert under a per-project lock, so concurrent creates cannot pass the cap together.
    await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext('webhooks'), hashtext(${projectId}))`
    const count = await tx.webhook.count({ where: { projectId, deletedAt: null } })
    if (count >= rules.maxPerProject)
      throw new AppError(
        'too_many_webhooks',
        `The project already has ${count} webhooks, the limit is ${rules.maxPerProject}; delete one first.`,
        { param: 'url' },
      )
    return tx.webhook.create({
      data: {
        id: newId('wh'),
        projectId,
        url: url.toString(),
        secret: `whsec_${randomBytes(32).toString('base64url')}`,
        // Stored in canonical order so lists and comparisons are stable.
        events: WEBHOOK_EVENTS.filter((e) => events.includes(e)),
        createdAt: new Date(),
      },
    })
  })
  return { ...presentWebhook(webhook), secret: webhook.secret }
}

export async function getWebhook(db: Db, projectId: string, id: string) {
  const webhook = await db.webhook.findFirst({ where: { id, projectId, deletedAt: null } })
  if (!webhook) throw notFound('webhook', id)
  return webhook
}

export async function listWebhooks(db: Db, projectId: string, page: Page) {
  const limit = page.limit ?? 20
  const where = { projectId, deletedAt: null }
  const cursor = page.after ? await db.webhook.findFirst({ where: { ...where, id: page.after } }) : null
  const rows = await db.webhook.findMany({
    where: { ...where, ...olderThan(cursor) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentWebhook)
}

/** Soft delete: the delivery log stays readable in the database; pending deliveries are given up. */
export async function deleteWebhook(db: Db, projectId: string, id: string) {
  const deleted = await db.webhook.updateMany({
    where: { id, projectId, deletedAt: null },
    data: { deletedAt: new Date() },
  })
  if (!deleted.count) throw notFound('webhook', id)
  await db.webhookDelivery.updateMany({
    where: { webhookId: id, status: 'pending' },
    data: { status: 'failed', lastError: 'webhook deleted', errorClass: 'webhook_deleted', nextAttemptAt: null },
  })
  return { id, object: 'webhook', deleted: true }
}

export async function listDeliveries(db: Db, projectId: string, webhookId: string, page: Page) {
  await getWebhook(db, projectId, webhookId)
  const limit = page.limit ?? 20
  const cursor = page.after ? await db.webhookDelivery.findFirst({ where: { id: page.after, webhookId } }) : null
  const rows = await db.webhookDelivery.findMany({
    where: { webhookId, ...olderThan(cursor) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentDelivery)
}

/**
 * Records the pending deliveries of a job that has reached a terminal state (the outbox rows its
 * transition writes), for jobs finished without them: rows written before the outbox existed. The
 * reconciler's sweep calls it (its relay then enqueues the new rows). Returns how many were recorded.
 */
export async function recordJobTerminal(db: Db, jobId: string): Promise<number> {
  const ids = await db.$transaction(async (tx) => {
    const job = await tx.fineTuningJob.findUnique({ where: { id: jobId } })
    return job ? recordDeliveries(tx, job) : []
  })
  return ids.length
}

/** The `refit-signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. */
export function signPayload(secret: string, body: string, timestamp: number): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')
  return `t=${timestamp},v1=${mac}`
}

// Idempotency-Key on every POST: the first request with a key runs and its answer is stored; the same
// key again (same caller, route and body) gets the stored answer replayed with `idempotent-replayed:
// true` instead of creating a second object. The same key with another route or body is refused, and
// one still running answers 409 so the client retries. 5xx answers are not stored: the client may retry.
// Keys are kept 24 hours (the worker's reconciler deletes older ones).
//
// Secrets are never stored: `key` and `secret` fields of a stored answer are nulled, and replaying such an
// answer is 409 `idempotent_replay_unavailable` (the secret was shown once; a replay cannot show it again).
// Multipart requests hash their fields and each file's sha256 as the handler streams them, so the same key
// with another file is 422 like any other body.
import { createHash, type Hash } from 'node:crypto'
import { Transform } from 'node:stream'
import type { Multipart } from '@fastify/multipart'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Prisma } from '../db/client.js'
import { AppError } from '../errors.js'

export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
const KEY_RE = /^[\x21-\x7e]{1,255}$/

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyRowId: bigint | null
    /** the multipart body's hash, once the handler has read all of it */
    idempotencyMultipartHash: string | null
  }
}

/** Response fields that hold a secret shown once: nulled before an answer is stored. */
const SECRET_FIELDS = new Set(['key', 'secret'])

/** A copy of `body` with every string `key`/`secret` field nulled, and whether any was. */
export function redactSecrets(body: unknown): { body: unknown; redacted: boolean } {
  let redacted = false
  const walk = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(walk)
    if (v && typeof v === 'object') {
      const out: Record<string, unknown> = {}
      for (const [k, x] of Object.entries(v)) {
        if (SECRET_FIELDS.has(k) && typeof x === 'string') {
          redacted = true
          out[k] = null
        } else out[k] = walk(x)
      }
      return out
    }
    return v
  }
  return { body: walk(body), redacted }
}

/** Marks a stored answer whose secrets were nulled: its replay cannot be given. */
const REDACTED_MARK = 'x-refit-redacted'

/**
 * Wraps `req.parts` so the parts the handler reads are hashed on the way: field names and values, and
 * each file part's bytes (sha256, through a pass-through so backpressure is kept). The digest is set on
 * the request when the handler has read the last part.
 */
function hashMultipart(req: FastifyRequest) {
  const original = req.parts.bind(req)
  req.parts = ((...args: Parameters<FastifyRequest['parts']>) => {
    const source = original(...args)
    const entries: string[] = []
    const pending: Promise<void>[] = []
    async function* hashed(): AsyncGenerator<Multipart> {
      for await (const part of source) {
        if (part.type === 'file') {
          const h: Hash = createHash('sha256')
          const entry = entries.push('') - 1
          let done: () => void = () => {}
          pending.push(new Promise<void>((resolve) => (done = resolve)))
          // Hashes in transform() (no 'data' listener, so nothing flows before the handler reads it).
          const tee = new Transform({
            transform(chunk: Buffer, _enc, cb) {
              h.update(chunk)
              cb(null, chunk)
            },
            flush(cb) {
              entries[entry] = `file:${part.fieldname}:${h.digest('hex')}`
              done()
              cb()
            },
          })
          tee.on('error', () => done())
          part.file.on('error', (err) => tee.destroy(err))
          part.file.pipe(tee)
          // `truncated` (the size limit was hit) is read by the handlers from the original stream.
          Object.defineProperty(tee, 'truncated', { get: () => part.file.truncated })
          yield { ...part, file: tee as unknown as typeof part.file }
        } else {
          entries.push(`field:${part.fieldname}=${String(part.value)}`)
          yield part
        }
      }
      await Promise.all(pending)
      req.idempotencyMultipartHash = createHash('sha256').update(entries.sort().join('\n')).digest('hex')
    }
    return hashed()
  }) as FastifyRequest['parts']
}

/** Reads a whole multipart body (files drained) through the hashing wrapper and returns its hash. */
async function digestMultipart(req: FastifyRequest): Promise<string | null> {
  hashMultipart(req)
  for await (const part of req.parts()) if (part.type === 'file') part.file.resume()
  return req.idempotencyMultipartHash
}

function scopeOf(req: FastifyRequest): string | null {
  const auth = req.routeOptions.config?.auth
  if (auth === 'project') return req.projectId
  if (auth === 'admin') return 'admin'
  return null
}

export const idempotencyPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('idempotencyRowId', null)
    app.decorateRequest('idempotencyMultipartHash', null)

    app.addHook('preHandler', async (req, reply) => {
      const header = req.headers['idempotency-key']
      if (req.method !== 'POST' || header === undefined) return
      const scope = scopeOf(req)
      if (!scope) return
      const key = Array.isArray(header) ? header[0] : header
      if (!KEY_RE.test(key))
        throw new AppError('invalid_request', 'Idempotency-Key must be 1-255 printable ASCII characters.', {
          param: 'Idempotency-Key',
        })
      const route = `POST ${req.url.split('?')[0]}`
      const multipart = req.isMultipart()
      // A multipart body's hash is known only once the handler has read it: stored with the answer.
      let requestHash = multipart
        ? null
        : createHash('sha256')
            .update(JSON.stringify(req.body ?? null))
            .digest('hex')
      try {
        const row = await app.db.idempotencyKey.create({ data: { scope, key, route, requestHash } })
        req.idempotencyRowId = row.id
        if (multipart) hashMultipart(req)
        return
      } catch (err) {
        if (!(err instanceof Prisma.PrismaClientKnownRequestError) || err.code !== 'P2002') throw err
      }
      const prev = await app.db.idempotencyKey.findUnique({ where: { scope_key: { scope, key } } })
      if (!prev)
        throw new AppError('idempotency_key_in_progress', 'Retry the request.', { headers: { 'retry-after': '1' } })
      if (prev.route === route && prev.responseStatus === null)
        throw new AppError('idempotency_key_in_progress', `A request with Idempotency-Key "${key}" is still running.`, {
          headers: { 'retry-after': '1' },
        })
      if (multipart && prev.route === route) requestHash = await digestMultipart(req)
      if (prev.route !== route || prev.requestHash !== requestHash)
        throw new AppError(
          'idempotency_key_reused',
          `Idempotency-Key "${key}" was used for another request (${prev.route}); use a new key for a new request.`,
          { param: 'Idempotency-Key' },
        )
      if (prev.responseStatus === null)
        throw new AppError('idempotency_key_in_progress', `A request with Idempotency-Key "${key}" is still running.`, {
          headers: { 'retry-after': '1' },
        })
      const stored = prev.responseBody as Record<string, unknown> | null
      if (stored && typeof stored === 'object' && REDACTED_MARK in stored)
        throw new AppError(
          'idempotent_replay_unavailable',
          `The request with Idempotency-Key "${key}" succeeded, but its answer held a secret shown only once and cannot be replayed. Look the object up (GET), or create a new one with a new key.`,
          { param: 'Idempotency-Key' },
        )
      return reply.status(prev.responseStatus).header('idempotent-replayed', 'true').send(prev.responseBody)
    })

    app.addHook('onSend', async (req, reply, payload) => {
      const id = req.idempotencyRowId
      // `== null`: routes registered before this plugin (e.g. /docs/json) have no decorator value at all.
      if (id == null) return payload
      req.idempotencyRowId = null
      if (reply.statusCode >= 500) {
        await app.db.idempotencyKey.delete({ where: { id } }).catch(() => {})
        return payload
      }
      let body: unknown = null
      try {
        body = typeof payload === 'string' ? JSON.parse(payload) : null
      } catch {
        body = null
      }
      const { body: safe, redacted } = redactSecrets(body)
      const responseBody = redacted ? { ...(safe as object), [REDACTED_MARK]: true } : safe
      await app.db.idempotencyKey
        .update({
          where: { id },
          data: {
            responseStatus: reply.statusCode,
            responseBody: responseBody as object,
            ...(req.idempotencyMultipartHash ? { requestHash: req.idempotencyMultipartHash } : {}),
          },
        })
        // The error's code only: Prisma's message quotes the whole payload.
        .catch((err) => req.log.warn({ code: err.code ?? err.name }, 'could not store the idempotent response'))
      return payload
    })
  },
  { name: 'idempotency', dependencies: ['db', 'auth'] },
)

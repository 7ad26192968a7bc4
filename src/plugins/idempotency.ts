// Idempotency-Key on every POST: the first request with a key runs and its answer is stored; the same
// key again (same caller, route and body) gets the stored answer replayed with `idempotent-replayed:
// true` instead of creating a second object. The same key with another route or body is refused, and
// one still running answers 409 so the client retries. 5xx answers are not stored: the client may retry.
// Keys are kept 24 hours (the worker's reconciler deletes older ones).
import { createHash } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { Prisma } from '../db/client.js'
import { AppError } from '../errors.js'

export const IDEMPOTENCY_TTL_MS = 24 * 3600 * 1000
const KEY_RE = /^[\x21-\x7e]{1,255}$/

declare module 'fastify' {
  interface FastifyRequest {
    idempotencyRowId: bigint | null
  }
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
      const requestHash = req.isMultipart()
        ? null
        : createHash('sha256')
            .update(JSON.stringify(req.body ?? null))
            .digest('hex')
      try {
        const row = await app.db.idempotencyKey.create({ data: { scope, key, route, requestHash } })
        req.idempotencyRowId = row.id
        return
      } catch (err) {
        if (!(err instanceof Prisma.PrismaClientKnownRequestError) || err.code !== 'P2002') throw err
      }
      const prev = await app.db.idempotencyKey.findUnique({ where: { scope_key: { scope, key } } })
      if (!prev)
        throw new AppError('idempotency_key_in_progress', 'Retry the request.', { headers: { 'retry-after': '1' } })
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
      return reply.status(prev.responseStatus).header('idempotent-replayed', 'true').send(prev.responseBody)
    })

    app.addHook('onSend', async (req, reply, payload) => {
      const id = req.idempotencyRowId
      if (id === null) return payload
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
      await app.db.idempotencyKey
        .update({ where: { id }, data: { responseStatus: reply.statusCode, responseBody: body as object } })
        .catch((err) => req.log.warn({ err: err.message }, 'could not store the idempotent response'))
      return payload
    })
  },
  { name: 'idempotency', dependencies: ['db', 'auth'] },
)

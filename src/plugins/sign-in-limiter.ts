// The admin door's own limiter: per client address, 5 failed sign-ins are free, then each further
// attempt waits a doubling delay (1 s after the 5th failure, 2 s after the 6th, ... up to 15 min), answered
// 429 `too_many_sign_in_attempts` with Retry-After without even checking the token. A success clears the
// address's count and is never counted. Kept in Redis, so every API process agrees; the address is
// `req.ip`, which honours TRUST_PROXY. The general per-key limiter cannot do this: a sign-in has no key.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'

export const FREE_FAILURES = 5
export const MAX_DELAY_S = 15 * 60
const FORGET_AFTER_S = 24 * 3600

const keyOf = (app: FastifyInstance, req: FastifyRequest) => `${app.config.queuePrefix}:admin-sign-in:${req.ip}`

/** Throws 429 while the address must wait; call before checking the token. */
export async function assertSignInAllowed(app: FastifyInstance, req: FastifyRequest): Promise<void> {
  const until = Number(await app.redis.hget(keyOf(app, req), 'blockedUntil'))
  const waitMs = until - Date.now()
  if (waitMs > 0)
    throw new AppError(
      'too_many_sign_in_attempts',
      `Too many failed sign-ins from this address; try again in ${Math.ceil(waitMs / 1000)} s.`,
      { headers: { 'retry-after': String(Math.ceil(waitMs / 1000)) } },
    )
}

/** Counts a failure; from the FREE_FAILURES-th on, blocks the address for a doubling delay. */
export async function recordSignInFailure(app: FastifyInstance, req: FastifyRequest): Promise<void> {
  const key = keyOf(app, req)
  const failures = await app.redis.hincrby(key, 'failures', 1)
  if (failures >= FREE_FAILURES) {
    const delayS = Math.min(2 ** (failures - FREE_FAILURES), MAX_DELAY_S)
    await app.redis.hset(key, 'blockedUntil', String(Date.now() + delayS * 1000))
  }
  await app.redis.expire(key, FORGET_AFTER_S)
}

export async function clearSignInFailures(app: FastifyInstance, req: FastifyRequest): Promise<void> {
  await app.redis.del(keyOf(app, req))
}

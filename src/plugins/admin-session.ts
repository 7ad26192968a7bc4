// The admin dashboard's sign-in: `POST /admin/session` with the admin token sets a signed session cookie
// (HttpOnly, SameSite=Strict, expiring), which /v1/admin/* and the dashboard pages accept instead of the
// bearer token. The cookie is stateless (HMAC with a key derived from the admin token, so rotating the token
// signs everyone out); signing out also records the session id in Redis until it would have expired, so a
// copied cookie stops working too. State-changing calls made with the cookie must echo the session's CSRF
// token in `x-refit-csrf`: a cross-site page can make the browser send the cookie, not read the token.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../errors.js'

export const ADMIN_SESSION_COOKIE = 'refit_admin_session'
/** Seconds a dashboard session lasts. */
export const ADMIN_SESSION_TTL_S = 12 * 3600
export const CSRF_HEADER = 'x-refit-csrf'

/** What the signed cookie carries. */
export interface AdminSession {
  /** random session id, for revocation */
  sid: string
  /** the token state-changing calls must echo in `x-refit-csrf` */
  csrf: string
  /** unix seconds */
  iat: number
  /** unix seconds */
  exp: number
}

declare module 'fastify' {
  interface FastifyRequest {
    /** the dashboard session that authenticated an admin request, when the cookie (not a token) did */
    adminSession: AdminSession | null
  }
}

/** The HMAC key: derived from the admin token, never the token itself. */
function sessionKey(adminToken: string): Buffer {
  return createHmac('sha256', adminToken).update('refit admin session cookie v1').digest()
}

function mac(adminToken: string, payload: string): Buffer {
  return createHmac('sha256', sessionKey(adminToken)).update(payload).digest()
}

export function newAdminSession(now = Date.now()): AdminSession {
  const iat = Math.floor(now / 1000)
  return {
    sid: randomBytes(16).toString('hex'),
    csrf: randomBytes(24).toString('base64url'),
    iat,
    exp: iat + ADMIN_SESSION_TTL_S,
  }
}

/** `base64url(json).base64url(hmac)` */
export function signAdminSession(adminToken: string, session: AdminSession): string {
  const payload = Buffer.from(JSON.stringify(session)).toString('base64url')
  return `${payload}.${mac(adminToken, payload).toString('base64url')}`
}

/** The session in a cookie value when its signature holds and it has not expired; null otherwise. */
export function verifyAdminSession(adminToken: string, value: string, now = Date.now()): AdminSession | null {
  const dot = value.indexOf('.')
  if (dot <= 0 || value.length > 1024) return null
  const payload = value.slice(0, dot)
  const given = Buffer.from(value.slice(dot + 1), 'base64url')
  const expected = mac(adminToken, payload)
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null
  let s: AdminSession
  try {
    s = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as AdminSession
  } catch {
    return null
  }
  if (typeof s?.sid !== 'string' || typeof s.csrf !== 'string' || typeof s.exp !== 'number') return null
  if (s.exp <= Math.floor(now / 1000)) return null
  return s
}

/** One cookie's value from the Cookie header (first occurrence), or undefined. */
export function readCookie(req: FastifyRequest, name: string): string | undefined {
  const header = req.headers.cookie
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq < 0) continue
    if (part.slice(0, eq).trim() === name) {
      const raw = part.slice(eq + 1).trim()
      try {
        return decodeURIComponent(raw)
      } catch {
        return raw
      }
    }
  }
  return undefined
}

const revokedKey = (prefix: string, sid: string) => `${prefix}:admin-session:revoked:${sid}`

// req.protocol honours X-Forwarded-Proto when TRUST_PROXY trusts the proxy; COOKIE_SECURE forces Secure
// (a TLS terminator that does not send X-Forwarded-Proto).
const isHttps = (req: FastifyRequest) => req.server.config.cookieSecure || req.protocol === 'https'

export function setSessionCookie(req: FastifyRequest, reply: FastifyReply, value: string, maxAgeS: number) {
  const attrs = [
    `${ADMIN_SESSION_COOKIE}=${value}`,
    'Path=/',
    'HttpOnly',
    'SameSite=Strict',
    `Max-Age=${maxAgeS}`,
    `Expires=${new Date(Date.now() + maxAgeS * 1000).toUTCString()}`,
  ]
  if (isHttps(req)) attrs.push('Secure')
  reply.header('set-cookie', attrs.join('; '))
}

/**
 * The request's dashboard session: null when it carries no session cookie; throws `admin_session_invalid`
 * when it carries one that is forged, expired or signed out.
 */
export async function adminSessionOf(app: FastifyInstance, req: FastifyRequest): Promise<AdminSession | null> {
  const value = readCookie(req, ADMIN_SESSION_COOKIE)
  if (!value) return null
  const session = verifyAdminSession(app.adminToken, value)
  if (!session)
    throw new AppError('admin_session_invalid', 'The admin session has expired or is not valid; sign in again.')
  let revoked: number
  try {
    revoked = await app.redis.exists(revokedKey(app.config.queuePrefix, session.sid))
  } catch {
    // Fail closed: a signed-out session must not come back while Redis is unreachable.
    throw new AppError('service_unavailable', 'Cannot check the admin session right now; retry shortly.', {
      headers: { 'retry-after': '5' },
    })
  }
  if (revoked) throw new AppError('admin_session_invalid', 'The admin session has been signed out; sign in again.')
  return session
}

/** Records a signed-out session until it would have expired anyway. */
export async function revokeAdminSession(app: FastifyInstance, session: AdminSession) {
  const ttl = session.exp - Math.floor(Date.now() / 1000)
  if (ttl > 0) await app.redis.set(revokedKey(app.config.queuePrefix, session.sid), '1', 'EX', ttl)
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS'])

function sameOrigin(req: FastifyRequest): boolean {
  const origin = req.headers.origin
  if (origin) {
    try {
      return new URL(origin).host === req.headers.host
    } catch {
      return false
    }
  }
  return req.headers['sec-fetch-site'] === 'same-origin'
}

/**
 * CSRF for cookie-authenticated calls. The API (/v1/admin) needs `x-refit-csrf` equal to the session's
 * token. Bull Board's own page cannot send that header, so its calls need a same-origin `Origin` instead
 * (browsers always send it on state-changing fetches; with SameSite=Strict this is a second line).
 */
export function checkCsrf(req: FastifyRequest, session: AdminSession) {
  if (SAFE_METHODS.has(req.method)) return
  if (req.url.startsWith('/admin/queues')) {
    if (sameOrigin(req)) return
    throw new AppError('csrf_failed', 'Cross-origin request refused.')
  }
  const header = req.headers[CSRF_HEADER]
  const given = Buffer.from(typeof header === 'string' ? header : '')
  const expected = Buffer.from(session.csrf)
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw new AppError(
      'csrf_failed',
      `A state-changing call made with the admin session cookie needs the ${CSRF_HEADER} header from GET /admin/session.`,
      { param: CSRF_HEADER },
    )
}

export const adminSessionPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('adminSession', null)
  },
  { name: 'admin-session', dependencies: ['redis'] },
)

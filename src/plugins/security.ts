// HTTP hardening that does not depend on who calls: security headers (helmet), a same-origin CORS policy,
// load shedding (under-pressure) and per-route handler timeouts. Registered before auth, so an overloaded
// server refuses work before it spends a database round trip on the caller's key.
import cors from '@fastify/cors'
import helmet from '@fastify/helmet'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'

/**
 * Routes that answer even when the server sheds load: the probes (cheap, and a shed liveness probe would
 * get a busy but healthy process restarted; /readyz has its own 503 body, not our error envelope) and
 * the Prometheus scrape (an overloaded API is exactly when its metrics matter).
 */
const NEVER_SHED = new Set(['/healthz', '/readyz', '/metrics'])

const SAMPLE_INTERVAL_MS = 200
/** Consecutive pressured samples before requests are refused (~0.6 s of sustained pressure). */
const SUSTAINED_SAMPLES = 3

/** Seconds a shed client is asked to wait. */
export const OVERLOADED_RETRY_AFTER_S = 5

/**
 * Log paths that could carry a secret. The app never logs headers or bodies itself, but a plugin or a
 * future `req.log.info({ req })` must not leak a key: pino replaces these with "[Redacted]".
 */
export const LOG_REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  '*.headers.authorization',
  'res.headers["set-cookie"]',
]

/** The Fastify `logger` option: the caller's settings (tests pass a stream) with redaction always on. */
export function loggerOptions(config: Config, logger?: boolean | object): FastifyServerOptions['logger'] {
  if (logger === false) return false
  const base = logger === undefined || logger === true ? { level: config.logLevel } : logger
  return { ...base, redact: { paths: LOG_REDACT_PATHS, censor: '[Redacted]' } }
}

/** Uploads and downloads stream for as long as the link needs; REQUEST_TIMEOUT_MS is for everything else. */
function isStreamingRoute(schema: { consumes?: string[]; produces?: string[] } | undefined): boolean {
  if (schema?.consumes?.some((c) => c.startsWith('multipart/'))) return true
  return !!schema?.produces?.some((p) => !p.includes('json'))
}

/**
 * Closes the connection of a request whose body arrives slower than `minBytesPerSec` over a window: a
 * slowloris client trickling a body would otherwise hold its socket (and an upload slot) until the
 * connection timeout. Reads the socket's byte counter, never the stream, so body parsers are untouched.
 */
function guardSlowBodies(app: FastifyInstance, minBytesPerSec: number, windowMs: number) {
  if (minBytesPerSec <= 0) return
  const minBytes = Math.ceil((minBytesPerSec * windowMs) / 1000)
  app.addHook('onRequest', async (req) => {
    const raw = req.raw
    const hasBody = raw.headers['content-length'] !== undefined || raw.headers['transfer-encoding'] !== undefined
    if (!hasBody || raw.complete) return
    const socket = raw.socket
    // app.inject's requests have no real socket to measure or close
    if (typeof socket?.bytesRead !== 'number') return
    let last = socket.bytesRead
    const timer = setInterval(() => {
      if (raw.complete || socket.destroyed) return clearInterval(timer)
      const read = socket.bytesRead - last
      last = socket.bytesRead
      if (read >= minBytes) return
      clearInterval(timer)
      req.log.warn({ bytesRead: read, windowMs, minBytesPerSec }, 'request body too slow; closing the connection')
      socket.destroy()
    }, windowMs)
    timer.unref()
    raw.once('close', () => clearInterval(timer))
  })
}

export const securityPlugin = fp(
  async (app: FastifyInstance) => {
    const config = app.config
    guardSlowBodies(app, config.minUploadBytesPerSec, config.uploadRateWindowMs)

    // Every non-streaming route gets a handler timeout (a 503 request_timeout in our envelope).
    app.addHook('onRoute', (route) => {
      if (route.handlerTimeout !== undefined) return
      if (isStreamingRoute(route.schema as { consumes?: string[]; produces?: string[] } | undefined)) return
      route.handlerTimeout = config.requestTimeoutMs
    })

    // The API answers JSON (and zips); its one HTML page is Swagger UI, which needs inline styles.
    await app.register(helmet, {
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'self'"],
          imgSrc: ["'self'", 'data:', 'validator.swagger.io'],
          styleSrc: ["'self'", "'unsafe-inline'"],
          scriptSrc: ["'self'"],
          frameAncestors: ["'none'"],
        },
      },
      crossOriginResourcePolicy: { policy: 'same-origin' },
    })

    // The dashboard is served from the API's own origin, so the default is no CORS at all (browsers then
    // refuse cross-origin reads and preflights get 404). CORS_ORIGINS opts named origins in.
    if (config.corsOrigins.length > 0) {
      await app.register(cors, {
        origin: config.corsOrigins,
        methods: ['GET', 'POST', 'DELETE', 'PATCH'],
        allowedHeaders: ['authorization', 'content-type', 'idempotency-key'],
        exposedHeaders: ['x-request-id', 'retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining'],
        credentials: false,
        maxAge: 600,
        strictPreflight: true,
      })
    }

    if (config.maxEventLoopDelayMs > 0 || config.maxHeapUsedBytes > 0 || config.maxEventLoopUtilizationPercent > 0) {
      // One long synchronous stretch (start-up, a big zip listing, a test building fixtures) spoils one
      // sample; shedding then would refuse a healthy server's next requests. Shed only when pressure
      // lasts SUSTAINED_SAMPLES samples in a row.
      let pressured = 0
      const sampler = setInterval(() => {
        pressured = app.isUnderPressure() ? pressured + 1 : 0
      }, SAMPLE_INTERVAL_MS)
      sampler.unref()
      app.addHook('onClose', async () => clearInterval(sampler))
      await app.register(underPressure, {
        maxEventLoopDelay: config.maxEventLoopDelayMs,
        maxHeapUsedBytes: config.maxHeapUsedBytes,
        maxEventLoopUtilization: config.maxEventLoopUtilizationPercent / 100,
        sampleInterval: SAMPLE_INTERVAL_MS,
        retryAfter: OVERLOADED_RETRY_AFTER_S,
        pressureHandler: async (req, _reply, type, value) => {
          if (NEVER_SHED.has(req.routeOptions.url ?? '') || pressured < SUSTAINED_SAMPLES) return
          req.log.warn({ type, value }, 'shedding load')
          throw new AppError('overloaded', 'The server is overloaded; retry shortly.', {
            headers: { 'retry-after': String(OVERLOADED_RETRY_AFTER_S) },
          })
        },
      })
    }
  },
  { name: 'security', dependencies: ['error-handler'] },
)

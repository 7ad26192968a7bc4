// The one place that reads process.env. Everything else receives a Config, so tests pass their own.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'

export type TfBackendSetting = 'auto' | 'tensorflow' | 'wasm' | 'cpu'

/** The hardware a worker offers and a training job needs; each class has its own training queue. */
export type ResourceClass = 'cpu' | 'gpu'

/** Where an S3-compatible bucket is and how to sign for it (STORAGE_DRIVER=s3). */
export interface S3Settings {
  bucket: string
  /** null = AWS itself; else e.g. http://minio:9000 */
  endpoint: string | null
  region: string
  /** null = the SDK's default credential chain (instance role, ~/.aws, AWS_* variables) */
  accessKeyId: string | null
  secretAccessKey: string | null
  /** path-style URLs (http://host/bucket/key), which MinIO and most self-hosted servers need */
  forcePathStyle: boolean
}

/** Validated settings; see .env.example for the defaults and meaning of each. */
export interface Config {
  databaseUrl: string
  redisUrl: string
  port: number
  host: string
  storageDir: string
  workerConcurrency: number
  tfBackend: TfBackendSetting
  /** null until resolved by ensureAdminToken (generated once and kept in the storage directory) */
  adminToken: string | null
  /** BullMQ key prefix: lets tests (and several deployments) share one Redis */
  queuePrefix: string
  maxUploadBytes: number
  /** BullMQ lock of a training job; a worker silent for this long loses the job to another worker */
  workerLockMs: number
  /** how often workers look for jobs whose lock expired (their worker died) */
  workerStalledIntervalMs: number
  /** temporary uploads older than this were abandoned by a crashed API and are swept */
  tmpMaxAgeMs: number
  /** how often the worker re-enqueues files and jobs whose enqueue was lost, and sweeps old temp files */
  reconcileIntervalMs: number
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** inference child processes the API keeps (forked on first prediction) */
  inferenceProcesses: number
  /** per inference process: bytes of loaded model weights kept in its LRU cache, in MiB */
  inferenceCacheMb: number
  /** bytes a project may keep stored (datasets, result files, models, checkpoints, cached features), unless Project.storageQuotaBytes overrides it */
  storageQuotaBytes: number
  /** jobs a project may have unfinished (validating, queued, running, cancelling, paused), unless the project overrides it */
  maxConcurrentJobs: number
  /** trials one hyperparameter sweep may plan (its max_trials, or its grid's size) */
  maxSweepTrials: number
  /** requests per minute per API key (per IP without one), counted in Redis across API processes; 0 = off */
  rateLimitPerMinute: number
  /** ms a non-upload route may take from arrival to answer before a 503 request_timeout */
  requestTimeoutMs: number
  /** ms a socket may stay idle before it is closed (uploads included) */
  connectionTimeoutMs: number
  /** origins allowed to call the API from a browser; empty = same-origin only */
  corsOrigins: string[]
  /** load shedding: mean event-loop delay (ms) above which requests get 503 overloaded; 0 = off */
  maxEventLoopDelayMs: number
  /** load shedding: V8 heap bytes in use above which requests get 503 overloaded; 0 = off */
  maxHeapUsedBytes: number
  /** load shedding: event-loop utilization (percent of time busy) above which requests get 503; 0 = off */
  maxEventLoopUtilizationPercent: number
  /** `fs` (STORAGE_DIR) or `s3` (a bucket; STORAGE_DIR is then the local cache and temporary space) */
  storageDriver: 'fs' | 's3'
  /** set when storageDriver is `s3` */
  s3: S3Settings | null
  /** which training queue this worker consumes and which jobs it can run */
  workerResourceClass: ResourceClass
  /** how often a worker refreshes its registry entry; the entry expires after 3 missed heartbeats */
  workerHeartbeatMs: number
  /** a second bearer token accepted by GET /metrics besides the admin token (for a Prometheus scraper) */
  metricsToken: string | null
  /** what `node dist/src/main.js` runs: `all` (the API and a worker process beside it) or `api` (the API only) */
  role: 'all' | 'api'

  // --- multi-tenant safety (issue 13) ---
  /** webhooks may target private/loopback/link-local addresses (closed networks, tests) */
  webhookAllowPrivate: boolean
  /** live webhooks a project may have */
  maxWebhooksPerProject: number
  /** deliveries of one project being sent at once, across all workers */
  webhookConcurrencyPerProject: number
  /** a delivery attempt (DNS, connect, request, answer headers) is cut after this */
  webhookTimeoutMs: number

  // --- feature cache (issue 11) ---
  /** bytes of cached backbone features kept across jobs, all projects together; least recently used evicted first */
  featureCacheBytes: number
  // --- memory budgets (issue 14): estimated before queueing, enforced on the child processes
  /** bytes one training process may use: jobs estimated above it are refused; a process above it is killed */
  trainingMemoryBytes: number
  /** bytes one inference process may use: uploads and predictions estimated above it are refused; a process above it is killed */
  inferenceMemoryBytes: number
  /** an inference process whose resident set exceeds this percent of inferenceMemoryBytes after a request is replaced */
  inferenceRecyclePercent: number
  /** largest width * height of one image in a dataset */
  maxImagePixels: number

  // --- frozen forward passes (issue 11) ---
  /**
   * Frozen forward passes (backbone features, teacher outputs, evaluations) as TensorFlow graphs
   * (REFIT_FROZEN_GRAPH `auto` | `off`), compiled graphs kept under `<storageDir>/cache/graphs`
   * within FROZEN_GRAPH_CACHE_MB (least recently used removed first).
   */
  frozenGraph: { mode: 'auto' | 'off'; cacheDir: string; cacheBytes: number }
  /** distinct labels a dataset may have */
  maxClasses: number
  /** characters in one label */
  maxLabelChars: number
  /** Fastify's trustProxy: false, true, a hop count, or a comma-separated list of addresses/CIDRs */
  trustProxy: boolean | number | string
  /** the admin session cookie is always Secure (else only when the request, or the trusted proxy, says https) */
  cookieSecure: boolean
  /** open connections the API accepts at once; more are refused at accept */
  maxConnections: number
  /** a request body arriving slower than this (bytes/s, averaged over each `uploadRateWindowMs`) is cut; 0 = off */
  minUploadBytesPerSec: number
  /** live event streams (`?stream=true`) one API key may hold open, across API processes */
  maxStreamsPerKey: number
  /** live event streams one project may hold open, across API processes */
  maxStreamsPerProject: number
  /** the window MIN_UPLOAD_BYTES_PER_SEC is averaged over */
  uploadRateWindowMs: number
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`Invalid configuration: ${variable} ${message}`)
  }
}

type Env = Record<string, string | undefined>

function str(env: Env, name: string, fallback: string): string {
  const v = env[name]
  return v === undefined || v === '' ? fallback : v
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`)
  const n = Number(raw)
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`)
  return n
}

function oneOf<T extends string>(env: Env, name: string, fallback: T, allowed: readonly T[]): T {
  const v = str(env, name, fallback)
  if (!allowed.includes(v as T)) throw new ConfigError(name, `must be one of ${allowed.join(', ')}, got "${v}"`)
  return v as T
}

function url(env: Env, name: string, fallback: string, protocols: string[]): string {
  const v = str(env, name, fallback)
  let parsed: URL
  try {
    parsed = new URL(v)
  } catch {
    throw new ConfigError(name, `must be a URL, got "${v}"`)
  }
  if (!protocols.includes(parsed.protocol))
    throw new ConfigError(name, `must start with ${protocols.join(' or ')}, got "${parsed.protocol}"`)
  return v
}

/** Parses and validates the environment; throws ConfigError naming the first wrong variable. */
export function loadConfig(env: Env = process.env): Config {
  const adminToken = env.REFIT_ADMIN_TOKEN || null
  if (adminToken !== null && adminToken.length < 16)
    throw new ConfigError('REFIT_ADMIN_TOKEN', 'must be at least 16 characters long')
  const metricsToken = env.METRICS_TOKEN || null
  if (metricsToken !== null && metricsToken.length < 16)
    throw new ConfigError('METRICS_TOKEN', 'must be at least 16 characters long')
  const storageDriver = oneOf(env, 'STORAGE_DRIVER', 'fs', ['fs', 's3'] as const)
  const queuePrefix = str(env, 'QUEUE_PREFIX', 'refit')
  if (!/^[a-zA-Z0-9_-]{1,64}$/.test(queuePrefix))
    throw new ConfigError('QUEUE_PREFIX', 'must be 1-64 letters, digits, "_" or "-"')
  return {
    databaseUrl: url(env, 'DATABASE_URL', 'postgresql://postgres@127.0.0.1:5432/refit', ['postgresql:', 'postgres:']),
    redisUrl: url(env, 'REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']),
    port: int(env, 'PORT', 8080, 0, 65535),
    host: str(env, 'HOST', '127.0.0.1'),
    storageDir: resolve(str(env, 'STORAGE_DIR', '.data')),
    workerConcurrency: int(env, 'WORKER_CONCURRENCY', 1, 1, 64),
    tfBackend: oneOf(env, 'TF_BACKEND', 'auto', ['auto', 'tensorflow', 'wasm', 'cpu'] as const),
    adminToken,
    queuePrefix,
    maxUploadBytes: int(env, 'MAX_UPLOAD_BYTES', 1024 * 1024 * 1024, 1024, 64 * 1024 ** 3),
    workerLockMs: int(env, 'WORKER_LOCK_MS', 30_000, 500, 600_000),
    workerStalledIntervalMs: int(env, 'WORKER_STALLED_INTERVAL_MS', 30_000, 200, 600_000),
    tmpMaxAgeMs: int(env, 'TMP_MAX_AGE_MS', 6 * 3600_000, 0, 30 * 24 * 3600_000),
    reconcileIntervalMs: int(env, 'RECONCILE_INTERVAL_MS', 15_000, 100, 3600_000),
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
    inferenceProcesses: int(env, 'INFERENCE_PROCESSES', availableParallelism(), 1, 64),
    inferenceCacheMb: int(env, 'INFERENCE_CACHE_MB', 512, 16, 1024 * 1024),
    storageQuotaBytes: int(env, 'STORAGE_QUOTA_BYTES', 10 * 1024 ** 3, 0, 2 ** 53 - 1),
    maxConcurrentJobs: int(env, 'MAX_CONCURRENT_JOBS', 4, 1, 10_000),
    maxSweepTrials: int(env, 'MAX_SWEEP_TRIALS', 50, 1, 10_000),
    rateLimitPerMinute: int(env, 'RATE_LIMIT_PER_MINUTE', 600, 0, 10_000_000),
    requestTimeoutMs: int(env, 'REQUEST_TIMEOUT_MS', 30_000, 100, 3_600_000),
    connectionTimeoutMs: int(env, 'CONNECTION_TIMEOUT_MS', 120_000, 1_000, 3_600_000),
    corsOrigins: origins(env, 'CORS_ORIGINS'),
    maxEventLoopDelayMs: int(env, 'MAX_EVENT_LOOP_DELAY_MS', 1_000, 0, 60_000),
    maxHeapUsedBytes: int(env, 'MAX_HEAP_USED_BYTES', 0, 0, 2 ** 53 - 1),
    maxEventLoopUtilizationPercent: int(env, 'MAX_EVENT_LOOP_UTILIZATION_PERCENT', 0, 0, 100),
    storageDriver,
    s3: storageDriver === 's3' ? s3Settings(env) : null,
    workerResourceClass: oneOf(env, 'WORKER_RESOURCE_CLASS', 'cpu', ['cpu', 'gpu'] as const),
    workerHeartbeatMs: int(env, 'WORKER_HEARTBEAT_MS', 5_000, 100, 300_000),
    metricsToken,
    role: oneOf(env, 'REFIT_ROLE', 'all', ['all', 'api'] as const),
    ...safetySettings(env),
    featureCacheBytes: int(env, 'FEATURE_CACHE_BYTES', 4 * 1024 ** 3, 0, 2 ** 53 - 1),
    ...memorySettings(env),
    ...frozenGraphSettings(env),
  }
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  return oneOf(env, name, fallback ? 'true' : 'false', ['true', 'false'] as const) === 'true'
}

/** TRUST_PROXY: `false` (default), `true`, a hop count, or addresses/CIDRs of the proxies. */
function trustProxy(env: Env): boolean | number | string {
  const v = str(env, 'TRUST_PROXY', 'false').trim()
  if (v === 'false') return false
  if (v === 'true') return true
  if (/^\d+$/.test(v)) return Number(v)
  if (/^[0-9a-fA-F.:/,\s]+$/.test(v)) return v
  throw new ConfigError('TRUST_PROXY', `must be true, false, a hop count or proxy addresses, got "${v}"`)
}

/** Multi-tenant safety settings (issue 13), kept in one block. */
function safetySettings(env: Env) {
  return {
    webhookAllowPrivate: bool(env, 'WEBHOOK_ALLOW_PRIVATE', false),
    maxWebhooksPerProject: int(env, 'MAX_WEBHOOKS_PER_PROJECT', 20, 1, 10_000),
    webhookConcurrencyPerProject: int(env, 'WEBHOOK_CONCURRENCY_PER_PROJECT', 2, 1, 1_000),
    webhookTimeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 10_000, 100, 300_000),
    maxClasses: int(env, 'MAX_CLASSES', 1000, 2, 100_000),
    maxLabelChars: int(env, 'MAX_LABEL_CHARS', 200, 1, 10_000),
    trustProxy: trustProxy(env),
    cookieSecure: bool(env, 'COOKIE_SECURE', false),
    maxConnections: int(env, 'MAX_CONNECTIONS', 1000, 1, 1_000_000),
    maxStreamsPerKey: int(env, 'MAX_STREAMS_PER_KEY', 10, 1, 100_000),
    maxStreamsPerProject: int(env, 'MAX_STREAMS_PER_PROJECT', 50, 1, 1_000_000),
    minUploadBytesPerSec: int(env, 'MIN_UPLOAD_BYTES_PER_SEC', 10_240, 0, 1_073_741_824),
    uploadRateWindowMs: int(env, 'UPLOAD_RATE_WINDOW_MS', 30_000, 500, 3_600_000),
  }
}

/** Memory budgets (issue 14), kept in one block. */
function memorySettings(env: Env) {
  return {
    trainingMemoryBytes: int(env, 'TRAINING_MEMORY_BYTES', 6 * 1024 ** 3, 64 * 1024 ** 2, 2 ** 53 - 1),
    inferenceMemoryBytes: int(env, 'INFERENCE_MEMORY_BYTES', 2 * 1024 ** 3, 64 * 1024 ** 2, 2 ** 53 - 1),
    inferenceRecyclePercent: int(env, 'INFERENCE_RECYCLE_PERCENT', 75, 10, 100),
    maxImagePixels: int(env, 'MAX_IMAGE_PIXELS', 1024 * 1024, 1, 1024 ** 3),
  }
}

/** Frozen forward passes as TensorFlow graphs (issue 11), kept in one block. */
function frozenGraphSettings(env: Env): Pick<Config, 'frozenGraph'> {
  return {
    frozenGraph: {
      mode: oneOf(env, 'REFIT_FROZEN_GRAPH', 'auto', ['auto', 'off'] as const),
      cacheDir: join(resolve(str(env, 'STORAGE_DIR', '.data')), 'cache', 'graphs'),
      cacheBytes: int(env, 'FROZEN_GRAPH_CACHE_MB', 2048, 16, 1024 * 1024) * 1024 * 1024,
    },
  }
}

function s3Settings(env: Env): S3Settings {
  const bucket = str(env, 'S3_BUCKET', '')
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket))
    throw new ConfigError(
      'S3_BUCKET',
      `must name a bucket (3-63 lowercase letters, digits, "." or "-"), got "${bucket}"`,
    )
  const keyId = env.S3_ACCESS_KEY_ID || null
  const secret = env.S3_SECRET_ACCESS_KEY || null
  if (!keyId !== !secret)
    throw new ConfigError(keyId ? 'S3_SECRET_ACCESS_KEY' : 'S3_ACCESS_KEY_ID', 'must be set together with the other')
  const forcePathStyle = oneOf(env, 'S3_FORCE_PATH_STYLE', 'false', ['true', 'false'] as const) === 'true'
  return {
    bucket,
    endpoint: env.S3_ENDPOINT ? url(env, 'S3_ENDPOINT', '', ['http:', 'https:']) : null,
    region: str(env, 'S3_REGION', 'us-east-1'),
    accessKeyId: keyId,
    secretAccessKey: secret,
    forcePathStyle,
  }
}

/** A comma-separated list of origins (`https://host[:port]`), each checked; empty when unset. */
function origins(env: Env, name: string): string[] {
  const raw = str(env, name, '')
  if (!raw.trim()) return []
  return raw.split(',').map((o) => {
    const v = o.trim()
    let u: URL
    try {
      u = new URL(v)
    } catch {
      throw new ConfigError(name, `must list origins like https://app.example.com, got "${v}"`)
    }
    if (!['http:', 'https:'].includes(u.protocol) || u.origin !== v)
      throw new ConfigError(name, `must list bare origins (scheme://host[:port], no path), got "${v}"`)
    return v
  })
}

/**
 * Returns the admin token: REFIT_ADMIN_TOKEN when set, else one generated on first start and kept in
 * `<storage>/admin-token` (mode 0600) so restarts and other processes agree on it.
 */
export function ensureAdminToken(config: Config): string {
  return adminTokenSource(config).token
}

/**
 * The admin token and where it came from: `env` (REFIT_ADMIN_TOKEN), `file` (kept from an earlier start)
 * or `generated` (by this start). Only the start that generated it prints it: later starts print the path.
 */
export function adminTokenSource(config: Config): {
  token: string
  source: 'env' | 'file' | 'generated'
  file: string
} {
  const file = join(config.storageDir, 'admin-token')
  if (config.adminToken) return { token: config.adminToken, source: 'env', file }
  try {
    const token = readFileSync(file, 'utf8').trim()
    if (token.length >= 16) return { token, source: 'file', file }
  } catch {
    // first start: generate below
  }
  mkdirSync(config.storageDir, { recursive: true })
  const token = `refit-admin-${randomBytes(24).toString('base64url')}`
  try {
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' })
    return { token, source: 'generated', file }
  } catch {
    // another process won the race: use its token
    return { token: readFileSync(file, 'utf8').trim(), source: 'file', file }
  }
}

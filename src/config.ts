// The one place that reads process.env. Everything else receives a Config, so tests pass their own.
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export type TfBackendSetting = 'auto' | 'tensorflow' | 'wasm' | 'cpu'

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
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
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
    logLevel: oneOf(env, 'LOG_LEVEL', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
  }
}

/**
 * Returns the admin token: REFIT_ADMIN_TOKEN when set, else one generated on first start and kept in
 * `<storage>/admin-token` (mode 0600) so restarts and other processes agree on it.
 */
export function ensureAdminToken(config: Config): string {
  if (config.adminToken) return config.adminToken
  const file = join(config.storageDir, 'admin-token')
  try {
    const token = readFileSync(file, 'utf8').trim()
    if (token.length >= 16) return token
  } catch {
    // first start: generate below
  }
  mkdirSync(config.storageDir, { recursive: true })
  const token = `refit-admin-${randomBytes(24).toString('base64url')}`
  try {
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' })
    return token
  } catch {
    // another process won the race: use its token
    return readFileSync(file, 'utf8').trim()
  }
}

// Test environments on the real PostgreSQL and Redis: each test file gets its own database, its own
// BullMQ key prefix and its own storage directory, and removes all three when it ends, so files can
// run side by side.
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import pg from 'pg'
import { buildApp } from '../../src/app.js'
import { type Config, loadConfig } from '../../src/config.js'
import { prepareDatabase } from '../../src/db/prepare.js'

export const PG_URL = process.env.TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef'

export interface TestEnv {
  config: Config
  /** the env variables that reproduce `config` in a child process */
  env: Record<string, string>
  cleanup(): Promise<void>
}

/** A fresh database (migrated, built-in models registered), queue prefix and storage directory. */
export async function createTestEnv(name: string, overrides: Record<string, string> = {}): Promise<TestEnv> {
  const suffix = `${name.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`
  // A test may bring its own PostgreSQL server (DATABASE_URL override naming its `postgres` database).
  const dbUrl = new URL(overrides.DATABASE_URL ?? PG_URL)
  dbUrl.pathname = `/refit_test_${suffix}`
  const storageDir = await mkdtemp(join(tmpdir(), `refit-${name}-`))
  const env: Record<string, string> = {
    REDIS_URL,
    STORAGE_DIR: storageDir,
    QUEUE_PREFIX: `refit-test-${suffix}`,
    REFIT_ADMIN_TOKEN: ADMIN_TOKEN,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    TF_BACKEND: process.env.TF_BACKEND ?? 'auto',
    // Tests poll fast from one key; the limiter has its own tests with their own small limit.
    RATE_LIMIT_PER_MINUTE: '1000000',
    ...overrides,
    DATABASE_URL: dbUrl.toString(),
  }
  const config = loadConfig(env)
  await prepareDatabase(config.databaseUrl)
  return {
    config,
    env,
    async cleanup() {
      await dropDatabase(config.databaseUrl)
      await deleteRedisKeys(config.redisUrl, `${config.queuePrefix}:*`)
      await rm(storageDir, { recursive: true, force: true })
    },
  }
}

export async function dropDatabase(databaseUrl: string) {
  const url = new URL(databaseUrl)
  const name = url.pathname.slice(1)
  url.pathname = '/postgres'
  const admin = new pg.Client({ connectionString: url.toString() })
  await admin.connect()
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`)
  } finally {
    await admin.end()
  }
}

export async function deleteRedisKeys(redisUrl: string, pattern: string) {
  const redis = new Redis(redisUrl)
  try {
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      if (keys.length) await redis.del(...keys)
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}

export async function buildTestApp(config: Config): Promise<FastifyInstance> {
  const app = await buildApp({ config, adminToken: ADMIN_TOKEN, logger: false })
  await app.ready()
  return app
}

export const adminAuth = { authorization: `Bearer ${ADMIN_TOKEN}` }
export const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

/** Creates a project and an API key through the admin routes. */
export async function createProjectKey(app: FastifyInstance, name = 'test') {
  const project = await app.inject({ method: 'POST', url: '/v1/admin/projects', headers: adminAuth, payload: { name } })
  if (project.statusCode !== 201) throw new Error(`create project: ${project.statusCode} ${project.body}`)
  const projectId = project.json().id as string
  const key = await app.inject({
    method: 'POST',
    url: `/v1/admin/projects/${projectId}/api_keys`,
    headers: adminAuth,
    payload: {},
  })
  if (key.statusCode !== 201) throw new Error(`create key: ${key.statusCode} ${key.body}`)
  return { projectId, key: key.json().key as string }
}

/** A multipart body for app.inject (fields first, then the file part). */
export function multipart(fields: Record<string, string>, file?: { name: string; content: Buffer; field?: string }) {
  const boundary = `----refit${randomBytes(8).toString('hex')}`
  const chunks: Buffer[] = []
  for (const [k, v] of Object.entries(fields))
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`))
  if (file) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${file.field ?? 'file'}"; filename="${file.name}"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      file.content,
      Buffer.from('\r\n'),
    )
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`))
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } }
}

/** Polls `fn` until it returns a truthy value or the time is up. */
export async function waitFor<T>(
  fn: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  what: string,
  everyMs = 100,
): Promise<T> {
  const end = Date.now() + timeoutMs
  let last: unknown
  while (Date.now() < end) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last}` : ''}`)
}

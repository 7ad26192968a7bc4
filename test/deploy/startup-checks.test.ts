// Start-up and readiness messages: a missing PostgreSQL or Redis stops `node dist/src/main.js` with a
// message saying what to do; a Redis that may evict keys fails /readyz with the fix in the message.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { Redis } from 'ioredis'
import { projectRoot } from '../../src/lib/paths.js'
import { ADMIN_TOKEN, buildTestApp, createTestEnv, PG_URL, REDIS_URL } from '../helpers/env.js'
import { startPrivateRedis } from '../helpers/private-services.js'
import { freePort } from '../helpers/service.js'

const cleanups: (() => Promise<unknown>)[] = []
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {})
})

/** Runs main.js to its exit (it must exit on its own) and returns its code and output. */
async function runMain(env: Record<string, string>) {
  const dir = await mkdtemp(join(tmpdir(), 'refit-start-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const child = spawn(process.execPath, [join(projectRoot, 'dist/src/main.js')], {
    env: {
      ...process.env,
      STORAGE_DIR: dir,
      REFIT_ADMIN_TOKEN: ADMIN_TOKEN,
      PORT: String(await freePort()),
      LOG_LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  child.stderr.on('data', (d) => {
    out += d
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)))
  clearTimeout(timer)
  return { code, out }
}

test('no PostgreSQL: npm start says so, how to fix it, and exits non-zero', async () => {
  const url = new URL(PG_URL)
  url.port = String(await freePort())
  url.pathname = '/refit_nowhere'
  const { code, out } = await runMain({ DATABASE_URL: url.toString(), REDIS_URL })
  assert.notEqual(code, 0)
  assert.match(out, /cannot prepare PostgreSQL at postgresql:\/\/postgres@127\.0\.0\.1:\d+\/refit_nowhere/)
  assert.match(out, /Is PostgreSQL running and reachable\?.*\n.*DATABASE_URL/)
})

test('no Redis: npm start says so, how to fix it, and exits non-zero', async () => {
  const env = await createTestEnv('start_noredis')
  cleanups.push(() => env.cleanup())
  const port = await freePort()
  const { code, out } = await runMain({ DATABASE_URL: env.config.databaseUrl, REDIS_URL: `redis://127.0.0.1:${port}` })
  assert.notEqual(code, 0)
  assert.match(out, new RegExp(`cannot reach Redis at redis://127\\.0\\.0\\.1:${port}`))
  assert.match(out, /maxmemory-policy noeviction/)
  assert.match(out, /REDIS_URL/)
})

test('a Redis that may evict keys fails /readyz with the fix, and recovers once fixed', async () => {
  const redis = await startPrivateRedis()
  cleanups.push(() => redis.destroy())
  const admin = new Redis(redis.url)
  cleanups.push(async () => admin.disconnect())
  await admin.config('SET', 'maxmemory-policy', 'allkeys-lru')
  const env = await createTestEnv('start_lru', { REDIS_URL: redis.url })
  cleanups.push(() => env.cleanup())
  const app = await buildTestApp(env.config)
  cleanups.push(() => app.close())

  const res = await app.inject({ method: 'GET', url: '/readyz' })
  assert.equal(res.statusCode, 503)
  const body = res.json()
  assert.equal(body.checks.database.status, 'ok')
  assert.equal(body.checks.redis.status, 'down')
  assert.match(body.checks.redis.error, /maxmemory-policy is "allkeys-lru", not "noeviction"/)
  assert.match(body.checks.redis.error, /CONFIG SET maxmemory-policy noeviction/)

  await admin.config('SET', 'maxmemory-policy', 'noeviction')
  const ok = await app.inject({ method: 'GET', url: '/readyz' })
  assert.equal(ok.statusCode, 200, ok.body)
})

test('npm start warns about an evicting Redis at start (and keeps running)', async () => {
  const redis = await startPrivateRedis()
  cleanups.push(() => redis.destroy())
  const admin = new Redis(redis.url)
  cleanups.push(async () => admin.disconnect())
  await admin.config('SET', 'maxmemory-policy', 'allkeys-lru')
  const env = await createTestEnv('start_warn', { REDIS_URL: redis.url })
  cleanups.push(() => env.cleanup())
  const dir = await mkdtemp(join(tmpdir(), 'refit-start-'))
  cleanups.push(() => rm(dir, { recursive: true, force: true }))
  const child = spawn(process.execPath, [join(projectRoot, 'dist/src/main.js')], {
    env: { ...process.env, ...env.env, STORAGE_DIR: dir, REFIT_ROLE: 'api', PORT: String(await freePort()) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  child.stderr.on('data', (d) => {
    out += d
  })
  const exited = new Promise((r) => child.once('exit', r))
  cleanups.push(async () => {
    child.kill('SIGKILL')
    await exited
  })
  // generous, as startService is: at load ~19 (CI beside other work) the API took longer than 30 s to start
  const end = Date.now() + 180_000
  while (!out.includes('Refit API is running') && Date.now() < end && child.exitCode === null)
    await new Promise((r) => setTimeout(r, 100))
  assert.match(out, /WARNING: Redis maxmemory-policy is "allkeys-lru", not "noeviction"/)
  assert.match(out, /Refit API is running \(REFIT_ROLE=api: no worker here\)/)
  assert.equal(child.exitCode, null, 'still running')
})

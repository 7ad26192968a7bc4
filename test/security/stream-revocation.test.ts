// A revoked key's live streams close promptly (issue 13, item 4). On a real API process (`node
// dist/src/main.js`, REFIT_ROLE=api) they close through the Redis message within a second of the revoke; when
// that message is lost (the key revoked while Redis could not carry it) they close at the process's next
// shared check of the keys its streams use: one query per process every KEY_RECHECK_MS, not one per stream.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { KEY_RECHECK_MS } from '../../src/plugins/job-updates.js'
import { adminAuth, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'
import { type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let app: FastifyInstance
let api: RunningService
let local: string
let projectId: string
let jobId: string

before(async () => {
  env = await createTestEnv('stream_revocation', { MAX_STREAMS_PER_KEY: '20', MAX_STREAMS_PER_PROJECT: '50' })
  app = await buildTestApp(env.config)
  await app.listen({ port: 0, host: '127.0.0.1' })
  local = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  api = await startService(env.env, { role: 'api' })
  ;({ projectId } = await createProjectKey(app, 'revocation'))
  jobId = await insertJobRow(app.db, projectId, 'running')
})
after(async () => {
  await api?.stop()
  await app?.close()
  await env?.cleanup()
})

async function newKey() {
  const res = await app.inject({
    method: 'POST',
    url: `/v1/admin/projects/${projectId}/api_keys`,
    headers: adminAuth,
    payload: {},
  })
  assert.equal(res.statusCode, 201, res.body)
  return { key: res.json().key as string, id: res.json().id as string }
}

interface Stream {
  /** resolves with the time the server ended the stream */
  ended: Promise<number>
  abort(): void
}

/**
 * Opens a job's event stream (the admin route's when `key` is empty) and returns once its first bytes arrived
 * (the server registered it).
 */
async function open(base: string, key: string, path = `/v1/fine_tuning/jobs/${jobId}`): Promise<Stream> {
  const ctl = new AbortController()
  const res = await fetch(`${base}${path}/events?stream=true`, {
    headers: key ? { authorization: `Bearer ${key}` } : adminAuth,
    signal: ctl.signal,
  })
  assert.equal(res.status, 200, await (res.status === 200 ? Promise.resolve('') : res.text()))
  const reader = res.body!.getReader()
  await reader.read()
  const ended = (async () => {
    try {
      while (!(await reader.read()).done) {}
    } catch {
      // aborted by the test
    }
    return Date.now()
  })()
  return { ended, abort: () => ctl.abort() }
}

const within = <T>(p: Promise<T>, ms: number, what: string) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(what)), ms))])

test('revoking a key closes its open streams on an API process within a second (the Redis message)', async (t) => {
  const [revokedKey, otherKey] = [await newKey(), await newKey()]
  const streams = await Promise.all(Array.from({ length: 5 }, () => open(api.url, revokedKey.key)))
  const other = await open(api.url, otherKey.key)
  const revokedAt = Date.now()
  const res = await app.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${projectId}/api_keys/${revokedKey.id}`,
    headers: adminAuth,
  })
  const answeredAt = Date.now()
  assert.equal(res.statusCode, 200, res.body)
  const ends = await within(Promise.all(streams.map((s) => s.ended)), 5_000, 'the revoked key’s streams stayed open')
  const latency = Math.max(...ends) - answeredAt
  t.diagnostic(
    `5 streams closed ${latency} ms after the revoke answered (${Math.max(...ends) - revokedAt} ms after it was sent)`,
  )
  // milliseconds (2 ms measured at a load average of 18 on 2 cores); the safety net alone takes up to 5 s
  assert.ok(latency < 1_000, `closed ${latency} ms after the revoke answered`)
  // another key's stream stays open
  const still = await Promise.race([other.ended.then(() => 'ended'), new Promise((r) => setTimeout(r, 300, 'open'))])
  assert.equal(still, 'open')
  other.abort()
})

test('a revocation whose message was lost closes the streams at the shared key check, one query for all of them', async (t) => {
  const { key, id } = await newKey()
  const streams = await Promise.all(Array.from({ length: 5 }, () => open(local, key)))
  assert.equal(app.jobUpdates.keyWatch().keys, 1, 'five streams, one watched key')
  const checksBefore = app.jobUpdates.keyWatch().checks
  // revoked in the database only: no Redis message, as when Redis was down at the revoke
  await app.db.apiKey.update({ where: { id }, data: { revokedAt: new Date() } })
  const revokedAt = Date.now()
  const ends = await within(
    Promise.all(streams.map((s) => s.ended)),
    KEY_RECHECK_MS + 3_000,
    'the streams of a key revoked without a message stayed open',
  )
  t.diagnostic(`closed ${Math.max(...ends) - revokedAt} ms after the silent revoke (check every ${KEY_RECHECK_MS} ms)`)
  assert.ok(app.jobUpdates.keyWatch().checks - checksBefore <= 2, 'one query per interval, not one per stream')
  assert.equal(app.jobUpdates.keyWatch().keys, 0)
})

test('an admin stream has no key to watch: the shared key check leaves it open', async () => {
  const stream = await open(local, '', `/v1/admin/jobs/${jobId}`)
  assert.equal(app.jobUpdates.keyWatch().keys, 0, 'no key watched for an admin stream')
  const checksBefore = app.jobUpdates.keyWatch().checks
  const still = await Promise.race([
    stream.ended.then(() => 'ended'),
    new Promise((r) => setTimeout(r, KEY_RECHECK_MS + 1_500, 'open')),
  ])
  assert.equal(still, 'open', `an admin stream closed (${app.jobUpdates.keyWatch().checks - checksBefore} key checks)`)
  stream.abort()
})

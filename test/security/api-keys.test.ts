// API keys (OWASP API2, broken authentication): keys are listed without their secret, revocation is
// immediate, last_used_at is written at most once a minute, and no key ever reaches the logs.
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { createDb, type Db } from '../../src/db/client.js'
import { forgetRecordedUses } from '../../src/plugins/auth.js'
import {
  ADMIN_TOKEN,
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let db: Db

before(async () => {
  env = await createTestEnv('sec_keys')
  app = await buildTestApp(env.config)
  db = createDb(env.config.databaseUrl, 2)
})
after(async () => {
  await app?.close()
  await db?.$disconnect()
  await env?.cleanup()
})

async function newKey(projectId: string, name: string) {
  const res = await app.inject({
    method: 'POST',
    url: `/v1/admin/projects/${projectId}/api_keys`,
    headers: adminAuth,
    payload: { name },
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json() as { id: string; key: string; prefix: string }
}

test('GET api_keys lists id, name, prefix and dates, never the secret or its hash', async () => {
  const { projectId, key: first } = await createProjectKey(app, 'list')
  const second = await newKey(projectId, 'ci')
  const res = await app.inject({ url: `/v1/admin/projects/${projectId}/api_keys`, headers: adminAuth })
  assert.equal(res.statusCode, 200, res.body)
  const body = res.json()
  assert.equal(body.object, 'list')
  assert.equal(body.data.length, 2)
  for (const k of body.data)
    assert.deepEqual(Object.keys(k).sort(), [
      'created_at',
      'id',
      'last_used_at',
      'name',
      'object',
      'prefix',
      'project_id',
      'revoked_at',
    ])
  assert.equal(body.data[0].id, second.id, 'newest first')
  assert.equal(body.data[0].name, 'ci')
  assert.equal(body.data[0].prefix, second.prefix)
  assert.equal(body.data[0].revoked_at, null)
  const rows = await db.apiKey.findMany({ where: { projectId } })
  for (const secret of [first, second.key, ...rows.map((r) => r.secretHash)])
    assert.ok(!res.body.includes(secret), 'a secret or hash leaked into the list')
  // an unknown project is a 404, not an empty list
  const missing = await app.inject({ url: '/v1/admin/projects/proj-nope/api_keys', headers: adminAuth })
  assert.equal(missing.statusCode, 404)
  assert.equal(missing.json().error.code, 'not_found')
})

test('DELETE revokes at once: the next request with the key is 401 invalid_api_key; other keys still work', async () => {
  const { projectId, key } = await createProjectKey(app, 'revoke')
  const other = await newKey(projectId, 'other')
  assert.equal((await app.inject({ url: '/v1/files', headers: bearer(key) })).statusCode, 200)
  const keyId = (await db.apiKey.findFirstOrThrow({ where: { projectId, id: { not: other.id } } })).id

  const del = await app.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${projectId}/api_keys/${keyId}`,
    headers: adminAuth,
  })
  assert.equal(del.statusCode, 200, del.body)
  assert.equal(del.json().id, keyId)
  assert.equal(typeof del.json().revoked_at, 'number')
  assert.ok(!del.body.includes(key))

  const after = await app.inject({ url: '/v1/files', headers: bearer(key) })
  assert.equal(after.statusCode, 401)
  assert.equal(after.json().error.code, 'invalid_api_key')
  assert.equal((await app.inject({ url: '/v1/files', headers: bearer(other.key) })).statusCode, 200)

  // revoking again is idempotent and keeps the first revoked_at
  const again = await app.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${projectId}/api_keys/${keyId}`,
    headers: adminAuth,
  })
  assert.equal(again.statusCode, 200)
  assert.equal(again.json().revoked_at, del.json().revoked_at)
  const listed = (await app.inject({ url: `/v1/admin/projects/${projectId}/api_keys`, headers: adminAuth })).json().data
  assert.equal(listed.find((k: { id: string }) => k.id === keyId).revoked_at, del.json().revoked_at)
})

test("a key cannot be revoked through another project's path", async () => {
  const a = await createProjectKey(app, 'A')
  const b = await createProjectKey(app, 'B')
  const keyA = await db.apiKey.findFirstOrThrow({ where: { projectId: a.projectId } })
  const res = await app.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${b.projectId}/api_keys/${keyA.id}`,
    headers: adminAuth,
  })
  assert.equal(res.statusCode, 404)
  assert.equal(res.json().error.param, 'key_id')
  assert.equal((await db.apiKey.findUniqueOrThrow({ where: { id: keyA.id } })).revokedAt, null)
  assert.equal((await app.inject({ url: '/v1/files', headers: bearer(a.key) })).statusCode, 200)
})

test('last_used_at is set on use and written at most once a minute per key', async () => {
  const { projectId, key } = await createProjectKey(app, 'last-used')
  const row = await db.apiKey.findFirstOrThrow({ where: { projectId } })
  assert.equal(row.lastUsedAt, null)
  await app.inject({ url: '/v1/files', headers: bearer(key) })
  const first = await waitFor(
    async () => (await db.apiKey.findUniqueOrThrow({ where: { id: row.id } })).lastUsedAt,
    5000,
    'last_used_at',
  )
  // 20 more requests within the minute: no write (the value stays the first one)
  for (let i = 0; i < 20; i++) await app.inject({ url: '/v1/files', headers: bearer(key) })
  await new Promise((r) => setTimeout(r, 200))
  assert.deepEqual((await db.apiKey.findUniqueOrThrow({ where: { id: row.id } })).lastUsedAt, first)

  // 30 s old: still fresh enough, not rewritten
  const thirty = new Date(Date.now() - 30_000)
  await db.apiKey.update({ where: { id: row.id }, data: { lastUsedAt: thirty } })
  await app.inject({ url: '/v1/files', headers: bearer(key) })
  await new Promise((r) => setTimeout(r, 200))
  assert.deepEqual((await db.apiKey.findUniqueOrThrow({ where: { id: row.id } })).lastUsedAt, thirty)

  // 61 s old: the next request records it again
  const stale = new Date(Date.now() - 61_000)
  await db.apiKey.update({ where: { id: row.id }, data: { lastUsedAt: stale } })
  // The minute passes for this process too: its cached key row and its own record of the last write expire.
  await app.lookups.invalidate()
  forgetRecordedUses()
  await app.inject({ url: '/v1/files', headers: bearer(key) })
  const renewed = await waitFor(
    async () => {
      const v = (await db.apiKey.findUniqueOrThrow({ where: { id: row.id } })).lastUsedAt
      return v && v.getTime() > stale.getTime() + 30_000 ? v : null
    },
    5000,
    'last_used_at renewed',
  )
  const listed = (await app.inject({ url: `/v1/admin/projects/${projectId}/api_keys`, headers: adminAuth })).json()
    .data[0]
  assert.equal(listed.last_used_at, Math.floor(renewed.getTime() / 1000))
})

test('no API key or admin token appears in the logs, at trace level, whatever the outcome', async () => {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk))
      cb()
    },
  })
  const logged = await buildApp({
    config: env.config,
    adminToken: ADMIN_TOKEN,
    logger: { level: 'trace', stream },
  })
  await logged.ready()
  try {
    const created = await createProjectKey(logged, 'logs')
    const key = created.key
    const secret = key.slice(key.indexOf('.') + 1)
    const wrongSecret = `${key.slice(0, key.indexOf('.'))}.${'Z'.repeat(43)}`
    const auth = bearer(key)
    const upload = multipart({ purpose: 'fine-tune' }, { name: 'd.csv', content: Buffer.from('x,label\n1,a\n2,b\n') })
    const calls = [
      { url: '/v1/files', headers: auth },
      { url: '/v1/files/file-nope', headers: auth },
      { url: '/v1/nope', headers: auth },
      { method: 'POST' as const, url: '/v1/files', headers: { ...auth, ...upload.headers }, payload: upload.payload },
      { method: 'POST' as const, url: '/v1/fine_tuning/jobs', headers: auth, payload: { model: 1 } },
      { method: 'POST' as const, url: '/v1/fine_tuning/jobs', headers: auth, payload: '{not json' },
      { url: '/v1/files', headers: bearer(wrongSecret) },
      { url: `/v1/files?after=${encodeURIComponent('x'.repeat(500))}`, headers: auth },
      { url: '/v1/admin/projects', headers: auth },
      { url: '/v1/admin/projects', headers: adminAuth },
      { url: '/v1/files', headers: adminAuth },
    ]
    for (const c of calls) await logged.inject(c)
    const keyRow = await db.apiKey.findFirstOrThrow({ where: { projectId: created.projectId } })
    await logged.inject({
      method: 'DELETE',
      url: `/v1/admin/projects/${created.projectId}/api_keys/${keyRow.id}`,
      headers: adminAuth,
    })
    await logged.inject({ url: '/v1/files', headers: auth }) // revoked now
    const text = lines.join('')
    assert.ok(lines.length > 20, `the capture saw ${lines.length} lines`)
    assert.match(text, /incoming request/)
    for (const [what, s] of [
      ['key', key],
      ['key secret', secret],
      ['forged key', wrongSecret],
      ['key hash', keyRow.secretHash],
      ['admin token', ADMIN_TOKEN],
    ])
      assert.ok(!text.includes(s), `the ${what} appears in the log`)
  } finally {
    await logged.close()
  }
})

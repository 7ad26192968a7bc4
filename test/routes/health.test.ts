import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, createTestEnv, type TestEnv } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
before(async () => {
  env = await createTestEnv('health')
  app = await buildTestApp(env.config)
})
after(async () => {
  await app.close()
  await env.cleanup()
})

test('healthz answers without auth', async () => {
  const res = await app.inject('/healthz')
  assert.equal(res.statusCode, 200)
  assert.deepEqual(res.json(), { status: 'ok' })
})

test('readyz checks PostgreSQL and Redis', async () => {
  const res = await app.inject('/readyz')
  assert.equal(res.statusCode, 200)
  assert.deepEqual(res.json().checks, { database: { status: 'ok' }, redis: { status: 'ok' } })
})

test('unknown routes answer the error envelope with a request id', async () => {
  const res = await app.inject('/v1/nope')
  assert.equal(res.statusCode, 404)
  const body = res.json()
  assert.equal(body.error.code, 'route_not_found')
  assert.equal(body.error.request_id, res.headers['x-request-id'])
})

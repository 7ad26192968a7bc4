// The lookup cache on the request path (API key rows, model rows) with two API instances sharing one
// PostgreSQL and Redis, as two API processes do: each serves rows from its own cache (a change written behind
// the API's back is not seen, which proves the cache is used), and a revoke or delete through either one is
// seen by the other on its very next request. Without Redis, lookups go to PostgreSQL every time.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import yazl from 'yazl'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { LookupCache } from '../../src/plugins/lookup-cache.js'
import {
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
} from '../helpers/env.js'

let env: TestEnv
let a: FastifyInstance
let b: FastifyInstance

before(async () => {
  env = await createTestEnv('lookup_cache')
  a = await buildTestApp(env.config)
  b = await buildTestApp(env.config)
})

after(async () => {
  await a?.close()
  await b?.close()
  await env?.cleanup()
})

test('a key revoked through one API process is refused by the other on the next request', async () => {
  const { projectId, key } = await createProjectKey(a, 'two-processes')
  const list = (app: FastifyInstance) => app.inject({ url: '/v1/models', headers: bearer(key) })
  assert.equal((await list(b)).statusCode, 200)
  // written behind the API's back: b still serves its cached row, a (nothing cached for this key) reads it
  const row = await a.db.apiKey.findFirstOrThrow({ where: { projectId } })
  await a.db.apiKey.update({ where: { id: row.id }, data: { revokedAt: new Date() } })
  assert.equal((await list(b)).statusCode, 200, 'b did not use its cache')
  assert.equal((await list(a)).statusCode, 401)
  await a.db.apiKey.update({ where: { id: row.id }, data: { revokedAt: null } })

  const revoke = await a.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${projectId}/api_keys/${row.id}`,
    headers: adminAuth,
  })
  assert.equal(revoke.statusCode, 200, revoke.body)
  const refused = await list(b)
  assert.equal(refused.statusCode, 401)
  assert.equal(refused.json().error.code, 'invalid_api_key')
})

test('a model deleted through one API process is gone for the other on the next prediction', async () => {
  const { key } = await createProjectKey(a, 'models')
  const src = builtinModelSourceDir('mnist-cnn')
  const zip = new yazl.ZipFile()
  for (const f of ['model.json', 'weights.bin']) zip.addBuffer(await readFile(join(src, f)), f)
  zip.end()
  const chunks: Buffer[] = []
  for await (const c of zip.outputStream) chunks.push(c as Buffer)
  const body = multipart(
    { input_shape: '[28,28,1]', classes: '["0","1","2","3","4"]', preprocessing: '{"scale":0.00392156862745098}' },
    { name: 'cnn.zip', content: Buffer.concat(chunks) },
  )
  const up = await a.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  const id = up.json().id as string
  // a request that fails after the model lookup (numbers for an image model): no inference process needed
  const predict = (app: FastifyInstance) =>
    app.inject({
      method: 'POST',
      url: `/v1/models/${id}/predictions`,
      headers: bearer(key),
      payload: { inputs: [{ features: [1, 2, 3] }] },
    })
  assert.equal((await predict(b)).statusCode, 400)
  await a.db.model.update({ where: { id }, data: { deletedAt: new Date() } })
  assert.equal((await predict(b)).statusCode, 400, 'b did not use its cache')
  assert.equal((await predict(a)).statusCode, 404)
  await a.db.model.update({ where: { id }, data: { deletedAt: null } })

  const del = await a.inject({ method: 'DELETE', url: `/v1/models/${id}`, headers: bearer(key) })
  assert.equal(del.statusCode, 200, del.body)
  const gone = await predict(b)
  assert.equal(gone.statusCode, 404, gone.body)
})

test('without Redis nothing is served from the cache', async () => {
  const down = new Redis('redis://127.0.0.1:1', {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
  })
  down.on('error', () => {})
  const cache = new LookupCache(down, 'x:lookups:epoch')
  let loads = 0
  const load = async () => ++loads
  for (let i = 0; i < 3; i++) assert.equal(await cache.get({} as never, 'k', load), i + 1)
  await assert.rejects(cache.invalidate(), /Redis is unreachable/)
  down.disconnect()
})

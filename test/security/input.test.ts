// Input validation (OWASP API3/API6, mass assignment and unsafe consumption): JSON bodies are never
// coerced, unknown fields are refused, hyperparameters are bounded, and nothing in a body can set a
// job's project, status or attempt.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { createDb, type Db } from '../../src/db/client.js'
import { adminAuth, bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let db: Db
let auth: { authorization: string }
let projectId: string

before(async () => {
  env = await createTestEnv('sec_input')
  app = await buildTestApp(env.config)
  db = createDb(env.config.databaseUrl, 2)
  const k = await createProjectKey(app, 'input')
  auth = bearer(k.key)
  projectId = k.projectId
})
after(async () => {
  await app?.close()
  await db?.$disconnect()
  await env?.cleanup()
})

const base = { model: 'mnist-cnn', training_file: 'file-000000000000000000000000' }

async function createJob(payload: unknown) {
  return app.inject({ method: 'POST', url: '/v1/fine_tuning/jobs', headers: auth, payload: payload as object })
}

function expect400(res: Awaited<ReturnType<typeof createJob>>, field: string, what: string) {
  assert.equal(res.statusCode, 400, `${what}: ${res.body}`)
  const error = res.json().error
  assert.equal(error.code, 'invalid_request', what)
  assert.equal(error.param, field, `${what}: ${res.body}`)
  assert.ok(
    error.details.some((d: { field: string }) => d.field === field),
    `${what}: details name ${field}: ${res.body}`,
  )
  assert.ok(error.message.startsWith(`${field}: `), `${what}: ${error.message}`)
}

test('JSON bodies are not coerced: a string "5" for n_epochs is a 400 naming the field', async () => {
  const res = await createJob({ ...base, hyperparameters: { n_epochs: '5' } })
  expect400(res, 'hyperparameters.n_epochs', 'n_epochs "5"')
  assert.match(res.json().error.message, /must be integer/)
})

test('no coercion anywhere in a JSON body: strings for numbers, numbers for strings, booleans, arrays', async () => {
  const cases: [unknown, string][] = [
    [
      { ...base, method: { type: 'transfer', transfer: { hyperparameters: { batch_size: '64' } } } },
      'method.transfer.hyperparameters.batch_size',
    ],
    [{ ...base, hyperparameters: { learning_rate: '0.01' } }, 'hyperparameters.learning_rate'],
    [{ ...base, seed: '42' }, 'seed'],
    [{ ...base, seed: true }, 'seed'],
    [{ ...base, suffix: 5 }, 'suffix'],
    [{ ...base, model: ['mnist-cnn'] }, 'model'],
    [{ ...base, metadata: { owner: 1 } }, 'metadata.owner'],
    [{ ...base, training_file: 7 }, 'training_file'],
  ]
  for (const [payload, field] of cases) expect400(await createJob(payload), field, JSON.stringify(payload))
  const name = await app.inject({
    method: 'POST',
    url: '/v1/admin/projects',
    headers: adminAuth,
    payload: { name: 123 },
  })
  assert.equal(name.statusCode, 400)
  assert.equal(name.json().error.param, 'name')
  assert.equal(await db.fineTuningJob.count({ where: { projectId } }), 0)
})

test('querystrings still coerce: ?limit=5 is the number 5, ?limit=abc a 400', async () => {
  const ok = await app.inject({ url: '/v1/fine_tuning/jobs?limit=5', headers: auth })
  assert.equal(ok.statusCode, 200, ok.body)
  const bad = await app.inject({ url: '/v1/fine_tuning/jobs?limit=abc', headers: auth })
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.json().error.param, 'querystring.limit')
  const unknown = await app.inject({ url: '/v1/fine_tuning/jobs?project_id=x', headers: auth })
  assert.equal(unknown.statusCode, 400)
})

test("no body field can set a job's project, status, attempt or other server-owned fields", async () => {
  const other = await createProjectKey(app, 'victim')
  for (const field of [
    'organization_id',
    'project_id',
    'projectId',
    'status',
    'attempt',
    'id',
    'fine_tuned_model',
    'created_at',
    'backend',
    'error',
    'constructor',
  ]) {
    const payload = JSON.parse(`{"model":"mnist-cnn","training_file":"file-x","${field}":"${other.projectId}"}`)
    const res = await createJob(payload)
    assert.equal(res.statusCode, 400, `${field}: ${res.body}`)
    const error = res.json().error
    assert.equal(error.code, 'invalid_request', field)
    assert.ok(
      error.details.some((d: { field: string; message: string }) => d.field === field && d.message === 'unknown field'),
      `${field}: ${res.body}`,
    )
  }
  // prototype poisoning is refused before validation (Fastify's onProtoPoisoning: 'error')
  const proto = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...auth, 'content-type': 'application/json' },
    payload: '{"model":"mnist-cnn","training_file":"file-x","__proto__":{"projectId":"p","status":"succeeded"}}',
  })
  assert.equal(proto.statusCode, 400)
  assert.equal(proto.json().error.code, 'invalid_json')
  // nested: inside method and hyperparameters too
  for (const payload of [
    { ...base, method: { type: 'transfer', status: 'succeeded' } },
    { ...base, hyperparameters: { n_epochs: 1, attempt: 9 } },
  ]) {
    const res = await createJob(payload)
    assert.equal(res.statusCode, 400, JSON.stringify(payload))
  }
  assert.equal(await db.fineTuningJob.count(), 0, 'no job was created by any of these')
})

test('hyperparameters are bounded', async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ n_epochs: 0 }, 'hyperparameters.n_epochs'],
    [{ n_epochs: 201 }, 'hyperparameters.n_epochs'],
    [{ n_epochs: 1e12 }, 'hyperparameters.n_epochs'],
    [{ n_epochs: 2.5 }, 'hyperparameters.n_epochs'],
    [{ batch_size: 0 }, 'hyperparameters.batch_size'],
    [{ batch_size: 4097 }, 'hyperparameters.batch_size'],
    [{ learning_rate: 0 }, 'hyperparameters.learning_rate'],
    [{ learning_rate: 2 }, 'hyperparameters.learning_rate'],
    [{ learning_rate: -1 }, 'hyperparameters.learning_rate'],
    [{ validation_split: 0.9 }, 'hyperparameters.validation_split'],
    [{ n_epochs: 'many' }, 'hyperparameters.n_epochs'],
  ]
  for (const [hp, field] of cases)
    expect400(await createJob({ ...base, hyperparameters: hp }), field, JSON.stringify(hp))
})

test('every JSON request body in the API refuses unknown fields (additionalProperties: false, nested too)', async () => {
  const doc = (await app.inject('/docs/json')).json()
  const resolve = (s: Record<string, unknown>): Record<string, unknown> => {
    const ref = s.$ref as string | undefined
    return ref ? doc.components.schemas[ref.split('/').pop()!] : s
  }
  const problems: string[] = []
  const walk = (s: Record<string, unknown> | undefined, where: string) => {
    if (!s || typeof s !== 'object') return
    s = resolve(s)
    if (s.type === 'object' && s.properties && s.additionalProperties !== false) problems.push(where)
    for (const [k, v] of Object.entries((s.properties as Record<string, Record<string, unknown>>) ?? {}))
      walk(v, `${where}.${k}`)
    for (const key of ['anyOf', 'oneOf', 'allOf'])
      for (const v of (s[key] as Record<string, unknown>[]) ?? []) walk(v, where)
    if (s.items) walk(s.items as Record<string, unknown>, `${where}[]`)
  }
  let bodies = 0
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, any>>))
    for (const [method, op] of Object.entries(ops)) {
      const json = op.requestBody?.content?.['application/json']?.schema
      if (!json) continue
      bodies++
      walk(json, `${method.toUpperCase()} ${path}`)
    }
  assert.ok(bodies >= 3, `only ${bodies} JSON bodies found`)
  assert.deepEqual(problems, [])
})

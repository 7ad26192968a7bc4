// Projects cannot see each other: every `{id}` route answers another project's object exactly as it
// answers an id that does not exist (no existence oracle), leaves the object alone, and lists never
// show another project's objects.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let authA: { authorization: string }
let authB: { authorization: string }
let fileA: string
let jobA: string
let fileB: string
let jobB: string

const CSV = ['x1,x2,label', '1,2,a', '3,4,b'].join('\n')
// Well-formed ids that were never issued (same shape as real ones, so only existence differs).
const MISSING_FILE = 'file-000000000000000000000000'
const MISSING_JOB = 'ftjob-000000000000000000000000'

async function upload(auth: { authorization: string }) {
  const body = multipart({ purpose: 'fine-tune' }, { name: 'data.csv', content: Buffer.from(CSV) })
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json().id as string
}

async function createJob(auth: { authorization: string }, fileId: string) {
  // The file is still `uploaded` (no worker here), so the job waits in validating_files: a real job row.
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: auth,
    payload: { model: 'mnist-cnn', training_file: fileId, metadata: { owner: 'A' } },
  })
  assert.equal(res.statusCode, 200, res.body)
  assert.equal(res.json().status, 'validating_files')
  return res.json().id as string
}

before(async () => {
  env = await createTestEnv('isolation')
  app = await buildTestApp(env.config)
  authA = bearer((await createProjectKey(app, 'A')).key)
  authB = bearer((await createProjectKey(app, 'B')).key)
  fileA = await upload(authA)
  jobA = await createJob(authA, fileA)
  fileB = await upload(authB)
  jobB = await createJob(authB, fileB)
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

/** The error body with the request id and the asked-for id taken out, so two answers can be compared. */
function normalized(res: LightMyRequestResponse, id: string) {
  const body = res.json()
  assert.equal(body.error.request_id, res.headers['x-request-id'])
  const { request_id: _, ...error } = body.error
  return JSON.parse(JSON.stringify({ ...body, error }).replaceAll(id, '<id>'))
}

const ROUTES: { method: InjectOptions['method']; path: (id: string) => string; kind: 'file' | 'job' }[] = [
  { method: 'GET', path: (id) => `/v1/files/${id}`, kind: 'file' },
  { method: 'DELETE', path: (id) => `/v1/files/${id}`, kind: 'file' },
  { method: 'GET', path: (id) => `/v1/fine_tuning/jobs/${id}`, kind: 'job' },
  { method: 'POST', path: (id) => `/v1/fine_tuning/jobs/${id}/cancel`, kind: 'job' },
  { method: 'GET', path: (id) => `/v1/fine_tuning/jobs/${id}/events`, kind: 'job' },
  { method: 'GET', path: (id) => `/v1/fine_tuning/jobs/${id}/checkpoints`, kind: 'job' },
  { method: 'GET', path: (id) => `/v1/fine_tuning/jobs/${id}/metrics`, kind: 'job' },
]

test("project B gets exactly the not-found answer for project A's file and job on every {id} route", async () => {
  for (const route of ROUTES) {
    const [theirs, missing] = route.kind === 'file' ? [fileA, MISSING_FILE] : [jobA, MISSING_JOB]
    const what = `${route.method} ${route.path('{id}')}`
    const foreign = await app.inject({ method: route.method, url: route.path(theirs), headers: authB })
    const absent = await app.inject({ method: route.method, url: route.path(missing), headers: authB })
    assert.equal(foreign.statusCode, 404, `${what}: ${foreign.body}`)
    assert.equal(absent.statusCode, 404, `${what}: ${absent.body}`)
    assert.equal(foreign.json().error.code, 'not_found', what)
    assert.equal(foreign.json().error.type, 'not_found_error', what)
    assert.equal(foreign.json().error.param, 'id', what)
    assert.ok(foreign.json().error.message.includes(theirs), what)
    assert.deepEqual(normalized(foreign, theirs), normalized(absent, missing), what)
    assert.equal(foreign.headers['content-type'], absent.headers['content-type'], what)
    // A's own key still reaches it (so the 404 is about the caller, not the object)
    const base = route.kind === 'file' ? `/v1/files/${theirs}` : `/v1/fine_tuning/jobs/${theirs}`
    const own = await app.inject({ url: route.method === 'GET' ? route.path(theirs) : base, headers: authA })
    assert.equal(own.statusCode, 200, `${what} as A: ${own.body}`)
  }
})

test("B's refused DELETE and cancel left A's objects as they were", async () => {
  const file = await app.inject({ url: `/v1/files/${fileA}`, headers: authA })
  assert.equal(file.statusCode, 200)
  assert.equal(file.json().status, 'uploaded')
  const job = await app.inject({ url: `/v1/fine_tuning/jobs/${jobA}`, headers: authA })
  assert.equal(job.json().status, 'validating_files')
  assert.equal(job.json().finished_at, null)
  const events = await app.inject({ url: `/v1/fine_tuning/jobs/${jobA}/events`, headers: authA })
  assert.ok(!events.json().data.some((e: { message: string }) => /cancel/i.test(e.message)))
})

test("B cannot use A's file to create a job: 400 invalid_training_file / invalid_validation_file, as for a missing file", async () => {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: authB,
    payload: { model: 'mnist-cnn', training_file: fileA },
  })
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_training_file')
  assert.equal(res.json().error.param, 'training_file')
  const missing = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: authB,
    payload: { model: 'mnist-cnn', training_file: MISSING_FILE },
  })
  assert.deepEqual(normalized(res, fileA), normalized(missing, MISSING_FILE))

  const asValidation = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: authB,
    payload: { model: 'mnist-cnn', training_file: fileB, validation_file: fileA },
  })
  assert.equal(asValidation.statusCode, 400, asValidation.body)
  assert.equal(asValidation.json().error.code, 'invalid_validation_file')
  assert.equal(asValidation.json().error.param, 'validation_file')
})

test("lists of B hold only B's objects, also when paged after one of A's ids", async () => {
  for (const [url, mine, theirs] of [
    ['/v1/files', fileB, fileA],
    ['/v1/fine_tuning/jobs', jobB, jobA],
  ] as const) {
    const list = await app.inject({ url, headers: authB })
    assert.equal(list.statusCode, 200, list.body)
    assert.deepEqual(
      list.json().data.map((o: { id: string }) => o.id),
      [mine],
      url,
    )
    // A's id as a cursor neither errors differently nor reveals anything: it is ignored like an unknown id
    const paged = await app.inject({ url: `${url}?after=${theirs}`, headers: authB })
    const pagedMissing = await app.inject({
      url: `${url}?after=${url.includes('files') ? MISSING_FILE : MISSING_JOB}`,
      headers: authB,
    })
    assert.equal(paged.statusCode, pagedMissing.statusCode, url)
    assert.deepEqual(paged.json(), pagedMissing.json(), url)
    assert.ok(!JSON.stringify(paged.json()).includes(theirs), url)
  }
  // and A sees only its own
  const listA = await app.inject({ url: '/v1/files', headers: authA })
  assert.deepEqual(
    listA.json().data.map((o: { id: string }) => o.id),
    [fileA],
  )
  const jobsA = await app.inject({ url: '/v1/fine_tuning/jobs', headers: authA })
  assert.deepEqual(
    jobsA.json().data.map((o: { id: string }) => o.id),
    [jobA],
  )
})

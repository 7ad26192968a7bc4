// The cross-project admin API and the dashboard's sign-in: who may call it (admin token or session cookie,
// never a project key), CSRF on cookie calls that change state, filters, actions and the dashboard's assets.
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { newId } from '../../src/lib/ids.js'
import { ADMIN_SESSION_COOKIE, newAdminSession, signAdminSession } from '../../src/plugins/admin-session.js'
import {
  ADMIN_TOKEN,
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  type TestEnv,
} from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let work: string
let a: { projectId: string; key: string }
let b: { projectId: string; key: string }
let fileId: string
let jobA: string
let jobB: string

/** A processed IDX dataset of digits 5-6 in project `projectId`, stored as the worker would leave it. */
async function processedIdxFile(projectId: string) {
  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6], format: 'idx', limit: 60, out })
  const id = newId('file')
  const stored = await app.storage.writeStream(`files/${id}`, createReadStream(out))
  await app.db.file.create({
    data: {
      id,
      projectId,
      filename: 'digits.zip',
      purpose: 'fine-tune',
      format: 'idx',
      bytes: BigInt(stored.bytes),
      sha256: stored.sha256,
      storagePath: `files/${id}`,
      status: 'processed',
      stats: { rows: 60, image_shape: [28, 28, 1], classes: ['5', '6'], class_counts: [30, 30] },
    },
  })
  return id
}

async function createJob(key: string, file: string) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: bearer(key),
    payload: { model: 'mnist-cnn', training_file: file, method: { type: 'transfer' } },
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json().id as string
}

async function signIn() {
  const res = await app.inject({ method: 'POST', url: '/admin/session', payload: { token: ADMIN_TOKEN } })
  assert.equal(res.statusCode, 201, res.body)
  const setCookie = String(res.headers['set-cookie'])
  const value = new RegExp(`${ADMIN_SESSION_COOKIE}=([^;]+)`).exec(setCookie)![1]
  return { cookie: `${ADMIN_SESSION_COOKIE}=${value}`, csrf: res.json().csrf_token as string, setCookie }
}

before(async () => {
  env = await createTestEnv('admin_api')
  app = await buildTestApp(env.config)
  work = await mkdtemp(join(tmpdir(), 'refit-admin-api-'))
  a = await createProjectKey(app, 'alpha')
  b = await createProjectKey(app, 'beta')
  fileId = await processedIdxFile(a.projectId)
  jobA = await createJob(a.key, fileId)
  const fileB = await processedIdxFile(b.projectId)
  jobB = await createJob(b.key, fileB)
})

after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('admin routes: 401 without credentials, 403 with a project key, 200 with the admin token', async () => {
  for (const url of ['/v1/admin/jobs', '/v1/admin/files', '/v1/admin/models', '/v1/admin/queues']) {
    const none = await app.inject({ method: 'GET', url })
    assert.equal(none.statusCode, 401, url)
    assert.equal(none.json().error.code, 'missing_authorization')
    const project = await app.inject({ method: 'GET', url, headers: bearer(a.key) })
    assert.equal(project.statusCode, 403, url)
    assert.equal(project.json().error.code, 'admin_required')
    const admin = await app.inject({ method: 'GET', url, headers: adminAuth })
    assert.equal(admin.statusCode, 200, `${url}: ${admin.body}`)
  }
  const post = await app.inject({ method: 'POST', url: `/v1/admin/jobs/${jobA}/cancel`, headers: bearer(a.key) })
  assert.equal(post.statusCode, 403)
})

test('jobs across projects, newest first, with project and filters', async () => {
  const all = (await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: adminAuth })).json()
  assert.deepEqual(
    all.data.map((j: { id: string }) => j.id),
    [jobB, jobA],
  )
  assert.deepEqual(all.data[1].project, { id: a.projectId, name: 'alpha' })
  assert.equal(all.data[1].status, 'queued')
  const byProject = (
    await app.inject({ method: 'GET', url: `/v1/admin/jobs?project=${a.projectId}`, headers: adminAuth })
  ).json()
  assert.deepEqual(
    byProject.data.map((j: { id: string }) => j.id),
    [jobA],
  )
  const q = (url: string) => app.inject({ method: 'GET', url, headers: adminAuth }).then((r) => r.json().data.length)
  assert.equal(await q('/v1/admin/jobs?method=transfer&model=mnist-cnn&status=queued'), 2)
  assert.equal(await q('/v1/admin/jobs?method=distillation'), 0)
  assert.equal(await q('/v1/admin/jobs?status=running'), 0)
  assert.equal(await q('/v1/admin/jobs?model=cnn-small'), 0)
  assert.equal(await q(`/v1/admin/jobs?limit=1&after=${jobB}`), 1)
  const bad = await app.inject({ method: 'GET', url: '/v1/admin/jobs?status=bogus', headers: adminAuth })
  assert.equal(bad.statusCode, 400)
  const one = await app.inject({ method: 'GET', url: `/v1/admin/jobs/${jobB}`, headers: adminAuth })
  assert.equal(one.json().project.name, 'beta')
  assert.equal(typeof one.json().queue_position, 'number')
  const missing = await app.inject({ method: 'GET', url: '/v1/admin/jobs/ftjob-nope', headers: adminAuth })
  assert.equal(missing.statusCode, 404)
})

test('jobs ranked by sort and order across pages: project name, oldest first, paged with after', async () => {
  const ids = async (url: string) => {
    const res = await app.inject({ method: 'GET', url, headers: adminAuth })
    assert.equal(res.statusCode, 200, res.body)
    return res.json() as { data: { id: string; project: { name: string } }[]; has_more: boolean }
  }
  // beta's job is newer, but alpha sorts first by project name ascending; descending turns it round
  assert.deepEqual(
    (await ids('/v1/admin/jobs?sort=project&order=asc')).data.map((j) => j.id),
    [jobA, jobB],
  )
  assert.deepEqual(
    (await ids('/v1/admin/jobs?sort=project')).data.map((j) => j.id),
    [jobB, jobA],
  )
  assert.deepEqual(
    (await ids('/v1/admin/jobs?order=asc')).data.map((j) => j.id),
    [jobA, jobB],
  )
  // one per page: the second page follows the first job, and ends the list
  const first = await ids('/v1/admin/jobs?sort=project&order=asc&limit=1')
  assert.deepEqual([first.data.map((j) => j.id), first.has_more], [[jobA], true])
  const second = await ids(`/v1/admin/jobs?sort=project&order=asc&limit=1&after=${jobA}`)
  assert.deepEqual([second.data.map((j) => j.id), second.has_more], [[jobB], false])
  // jobs that never ran have no duration or metrics: they keep newest-first order among themselves
  assert.deepEqual(
    (await ids('/v1/admin/jobs?sort=best')).data.map((j) => j.id),
    [jobB, jobA],
  )
  const bad = await app.inject({ method: 'GET', url: '/v1/admin/jobs?sort=loss', headers: adminAuth })
  assert.equal(bad.statusCode, 400)
  assert.equal(bad.json().error.param, 'querystring.sort')
})

test('sign-in: the cookie is HttpOnly, SameSite=Strict, expiring, and works on /v1/admin; a wrong token is 401', async () => {
  const probe = await app.inject({ method: 'GET', url: '/admin/session' })
  assert.equal(probe.statusCode, 200)
  assert.equal(probe.json().signed_in, false)
  const wrong = await app.inject({ method: 'POST', url: '/admin/session', payload: { token: 'nope' } })
  assert.equal(wrong.statusCode, 401)
  assert.equal(wrong.headers['set-cookie'], undefined)

  const { cookie, csrf, setCookie } = await signIn()
  assert.match(setCookie, /HttpOnly/)
  assert.match(setCookie, /SameSite=Strict/)
  assert.match(setCookie, /Path=\//)
  assert.match(setCookie, /Max-Age=43200/)
  assert.match(setCookie, /Expires=/)
  assert.ok(!setCookie.includes(ADMIN_TOKEN), 'the token is not in the cookie')

  const me = (await app.inject({ method: 'GET', url: '/admin/session', headers: { cookie } })).json()
  assert.equal(me.signed_in, true)
  assert.equal(me.csrf_token, csrf)
  const jobs = await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: { cookie } })
  assert.equal(jobs.statusCode, 200)
  const projects = await app.inject({ method: 'GET', url: '/v1/admin/projects', headers: { cookie } })
  assert.equal(projects.statusCode, 200, 'the older admin routes take the cookie too')

  // Project routes refuse admin credentials of either kind.
  const withCookie = await app.inject({ method: 'GET', url: '/v1/fine_tuning/jobs', headers: { cookie } })
  assert.equal(withCookie.statusCode, 401)
  const withToken = await app.inject({ method: 'GET', url: '/v1/fine_tuning/jobs', headers: adminAuth })
  assert.equal(withToken.statusCode, 403)
  assert.equal(withToken.json().error.code, 'project_key_required')
})

test('CSRF: a cookie POST needs x-refit-csrf equal to the session token; the bearer token does not', async () => {
  const { cookie, csrf } = await signIn()
  const url = `/v1/admin/jobs/${jobA}/cancel`
  const missing = await app.inject({ method: 'POST', url, headers: { cookie } })
  assert.equal(missing.statusCode, 403)
  assert.equal(missing.json().error.code, 'csrf_failed')
  const wrong = await app.inject({ method: 'POST', url, headers: { cookie, 'x-refit-csrf': `${csrf.slice(1)}x` } })
  assert.equal(wrong.statusCode, 403)
  const other = await signIn()
  const crossed = await app.inject({ method: 'POST', url, headers: { cookie, 'x-refit-csrf': other.csrf } })
  assert.equal(crossed.statusCode, 403, "another session's token does not fit")
  assert.equal((await app.db.fineTuningJob.findUnique({ where: { id: jobA } }))!.status, 'queued')

  const ok = await app.inject({ method: 'POST', url, headers: { cookie, 'x-refit-csrf': csrf } })
  assert.equal(ok.statusCode, 200, ok.body)
  assert.equal(ok.json().status, 'cancelled')
  assert.equal(ok.json().project.id, a.projectId)
  const again = await app.inject({ method: 'POST', url, headers: adminAuth })
  assert.equal(again.statusCode, 409)

  const retry = await app.inject({
    method: 'POST',
    url: `/v1/admin/jobs/${jobA}/retry`,
    headers: { cookie, 'x-refit-csrf': csrf },
  })
  assert.equal(retry.statusCode, 200, retry.body)
  assert.equal(retry.json().retry_of_job_id, jobA)
  assert.equal(retry.json().organization_id, a.projectId)
  const notRetryable = await app.inject({ method: 'POST', url: `/v1/admin/jobs/${jobB}/retry`, headers: adminAuth })
  assert.equal(notRetryable.statusCode, 409)

  const queues = (await app.inject({ method: 'GET', url: '/v1/admin/queues', headers: { cookie } })).json()
  assert.deepEqual(
    queues.data.map((q: { name: string }) => q.name),
    // every queue of the registry, training-gpu included
    ['training', 'training-gpu', 'files', 'evaluations', 'webhooks', 'maintenance'],
  )
  const training = queues.data[0]
  assert.equal(training.prefix, env.config.queuePrefix)
  assert.equal(training.counts.waiting, 2, 'job B and the retry wait; the cancelled job left the queue')
})

test('forged, expired and signed-out cookies are refused', async () => {
  const { cookie, csrf } = await signIn()
  const tampered = `${cookie.slice(0, -2)}${cookie.endsWith('A') ? 'BB' : 'AA'}`
  const r1 = await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: { cookie: tampered } })
  assert.equal(r1.statusCode, 401)
  assert.equal(r1.json().error.code, 'admin_session_invalid')

  const old = newAdminSession(Date.now() - 13 * 3600 * 1000)
  const expired = `${ADMIN_SESSION_COOKIE}=${signAdminSession(ADMIN_TOKEN, old)}`
  const r2 = await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: { cookie: expired } })
  assert.equal(r2.statusCode, 401)
  const otherKey = `${ADMIN_SESSION_COOKIE}=${signAdminSession('another-token', newAdminSession())}`
  const r3 = await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: { cookie: otherKey } })
  assert.equal(r3.statusCode, 401, 'a cookie signed for another admin token')

  const out = await app.inject({ method: 'DELETE', url: '/admin/session', headers: { cookie, 'x-refit-csrf': csrf } })
  assert.equal(out.statusCode, 200)
  assert.match(String(out.headers['set-cookie']), /Max-Age=0/)
  const r4 = await app.inject({ method: 'GET', url: '/v1/admin/jobs', headers: { cookie } })
  assert.equal(r4.statusCode, 401, 'a copy of a signed-out cookie stops working')
  assert.equal(
    (await app.inject({ method: 'GET', url: '/admin/session', headers: { cookie } })).json().signed_in,
    false,
  )
})

test('datasets: list and detail with stats; sample images decoded from the IDX zip as PNG', async () => {
  const list = (
    await app.inject({ method: 'GET', url: `/v1/admin/files?project=${a.projectId}`, headers: adminAuth })
  ).json()
  assert.equal(list.data.length, 1)
  assert.equal(list.data[0].project.name, 'alpha')
  const file = (await app.inject({ method: 'GET', url: `/v1/admin/files/${fileId}`, headers: adminAuth })).json()
  assert.deepEqual(file.stats.classes, ['5', '6'])
  const res = await app.inject({ method: 'GET', url: `/v1/admin/files/${fileId}/samples?n=4`, headers: adminAuth })
  assert.equal(res.statusCode, 200, res.body)
  const samples = res.json().data as { label: string; width: number; png_base64: string }[]
  assert.equal(samples.length, 4)
  assert.deepEqual(
    samples.map((s) => s.label),
    ['5', '6', '5', '6'],
    'round-robin over the classes',
  )
  for (const s of samples) {
    assert.equal(s.width, 28)
    assert.equal(Buffer.from(s.png_base64, 'base64').readUInt32BE(0), 0x89504e47, 'PNG')
  }
})

test('models: built-in and fine-tuned across projects, lineage, download', async () => {
  const list = (await app.inject({ method: 'GET', url: '/v1/admin/models?kind=builtin', headers: adminAuth })).json()
  const cnn = list.data.find((m: { id: string }) => m.id === 'mnist-cnn')
  assert.ok(cnn)
  assert.equal(cnn.project, null)
  const lineage = await app.inject({ method: 'GET', url: '/v1/admin/models/mnist-cnn/lineage', headers: adminAuth })
  assert.equal(lineage.statusCode, 200, lineage.body)
  assert.equal(lineage.json().chain[0].id, 'mnist-cnn')
  const zip = await app.inject({ method: 'GET', url: '/v1/admin/models/mnist-cnn/content', headers: adminAuth })
  assert.equal(zip.statusCode, 200)
  assert.equal(zip.headers['content-type'], 'application/zip')
  assert.equal(zip.rawPayload.readUInt32LE(0), 0x04034b50, 'a zip')
})

test('dashboard page and assets: same-origin CSP, nothing outside the allow-list; Bull Board behind the session', async () => {
  const page = await app.inject({ method: 'GET', url: '/admin' })
  assert.equal(page.statusCode, 200)
  assert.match(String(page.headers['content-type']), /text\/html/)
  const csp = String(page.headers['content-security-policy'])
  assert.match(csp, /script-src 'self'(;|$)/)
  assert.ok(!/https?:/.test(csp), 'no outside origin')
  for (const name of ['app.js', 'style.css', 'uPlot.iife.min.js', 'uPlot.min.css']) {
    const r = await app.inject({ method: 'GET', url: `/admin/assets/${name}` })
    assert.equal(r.statusCode, 200, name)
  }
  for (const name of ['..%2Fpackage.json', 'index.html', 'routes.ts'])
    assert.equal((await app.inject({ method: 'GET', url: `/admin/assets/${name}` })).statusCode, 404, name)

  const anonymous = await app.inject({ method: 'GET', url: '/admin/queues/api/queues' })
  assert.equal(anonymous.statusCode, 401)
  assert.equal(anonymous.json().error.code, 'missing_authorization')
  const browser = await app.inject({ method: 'GET', url: '/admin/queues', headers: { accept: 'text/html' } })
  assert.equal(browser.statusCode, 302)
  assert.equal(browser.headers.location, '/admin')
  const { cookie } = await signIn()
  const board = await app.inject({ method: 'GET', url: '/admin/queues', headers: { cookie } })
  assert.equal(board.statusCode, 200)
  const api = await app.inject({ method: 'GET', url: '/admin/queues/api/queues', headers: { cookie } })
  assert.equal(api.statusCode, 200, api.body)
  const names = (api.json().queues as { name: string }[]).map((q) => q.name).sort()
  assert.deepEqual(names, ['evaluations', 'files', 'maintenance', 'training', 'training-gpu', 'webhooks'])
  const crossSite = await app.inject({
    method: 'PUT',
    url: '/admin/queues/api/queues/training/pause',
    headers: { cookie, origin: 'https://evil.example' },
  })
  assert.equal(crossSite.statusCode, 403, 'a cross-origin state change through Bull Board is refused')
  const byToken = await app.inject({ method: 'GET', url: '/admin/queues/api/queues', headers: adminAuth })
  assert.equal(byToken.statusCode, 200)
})

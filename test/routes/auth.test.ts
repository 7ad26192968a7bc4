// Who may call what: admin routes take only the admin token, project routes only a project key, and the
// health and documentation routes nobody's. The last tests walk every route the app registered (HEAD
// twins included) and call each one, so a new route that forgets its declaration fails here.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
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
let projectKey: string
let projectId: string

before(async () => {
  env = await createTestEnv('auth')
  app = await buildTestApp(env.config)
  ;({ key: projectKey, projectId } = await createProjectKey(app, 'auth'))
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

/** A well-formed key (it passes the format check) that was never issued. */
const UNKNOWN_KEY = `rk-abcdefghijkl.${'A'.repeat(43)}`
const GARBAGE = 'not-a-key-at-all'

function expectError(res: LightMyRequestResponse, status: number, code: string, what: string) {
  assert.equal(res.statusCode, status, `${what}: ${res.body}`)
  if (res.raw.req.method === 'HEAD') {
    assert.equal(res.body, '', `${what}: HEAD answers carry no body`)
    return
  }
  const body = res.json()
  assert.equal(body.error.code, code, what)
  assert.equal(body.error.param, null, what)
  assert.equal(body.error.request_id, res.headers['x-request-id'], what)
  assert.match(body.error.request_id, /^req_[0-9a-f]{24}$/)
}

const ADMIN_CALLS: InjectOptions[] = [
  { method: 'GET', url: '/v1/admin/projects' },
  { method: 'POST', url: '/v1/admin/projects', payload: { name: 'x' } },
  { method: 'POST', url: '/v1/admin/projects/proj-doesnotexist/api_keys', payload: {} },
]

const PROJECT_CALLS: InjectOptions[] = [
  { method: 'GET', url: '/v1/files' },
  { method: 'GET', url: '/v1/files/file-doesnotexist' },
  { method: 'DELETE', url: '/v1/files/file-doesnotexist' },
  { method: 'GET', url: '/v1/models' },
  { method: 'GET', url: '/v1/models/mnist-cnn' },
  { method: 'GET', url: '/v1/fine_tuning/jobs' },
  { method: 'POST', url: '/v1/fine_tuning/jobs', payload: { model: 'mnist-cnn', training_file: 'file-x' } },
  { method: 'POST', url: '/v1/fine_tuning/jobs/ftjob-doesnotexist/cancel' },
]

test('admin routes: 401 missing_authorization without a token', async () => {
  for (const call of ADMIN_CALLS) {
    const res = await app.inject(call)
    expectError(res, 401, 'missing_authorization', `${call.method} ${call.url}`)
    assert.equal(res.json().error.type, 'authentication_error')
  }
})

test('a header that is not `Bearer <token>` is missing_authorization', async () => {
  for (const authorization of ['Basic dXNlcjpwYXNz', ADMIN_TOKEN, 'Bearer', `Bearer ${ADMIN_TOKEN} extra`]) {
    const res = await app.inject({ method: 'GET', url: '/v1/admin/projects', headers: { authorization } })
    expectError(res, 401, 'missing_authorization', `Authorization: ${authorization}`)
  }
})

test('admin routes: 401 invalid_api_key with garbage or an unknown key', async () => {
  for (const token of [GARBAGE, UNKNOWN_KEY, `${ADMIN_TOKEN}x`]) {
    for (const call of ADMIN_CALLS) {
      const res = await app.inject({ ...call, headers: bearer(token) })
      expectError(res, 401, 'invalid_api_key', `${call.method} ${call.url} with ${token}`)
    }
  }
})

test('admin routes: 403 admin_required with a project key', async () => {
  for (const call of ADMIN_CALLS) {
    const res = await app.inject({ ...call, headers: bearer(projectKey) })
    expectError(res, 403, 'admin_required', `${call.method} ${call.url}`)
    assert.equal(res.json().error.type, 'permission_error')
  }
  // and nothing was created through the refused POST
  const list = await app.inject({ method: 'GET', url: '/v1/admin/projects', headers: adminAuth })
  assert.deepEqual(
    list.json().data.map((p: { id: string }) => p.id),
    [projectId],
  )
})

test('admin routes: the admin token passes', async () => {
  const list = await app.inject({ method: 'GET', url: '/v1/admin/projects', headers: adminAuth })
  assert.equal(list.statusCode, 200)
  // a lower-case scheme is accepted too (RFC 7235: the scheme is case-insensitive)
  const lower = await app.inject({
    method: 'GET',
    url: '/v1/admin/projects',
    headers: { authorization: `bearer ${ADMIN_TOKEN}` },
  })
  assert.equal(lower.statusCode, 200)
})

test('project routes: 403 project_key_required with the admin token', async () => {
  for (const call of PROJECT_CALLS) {
    const res = await app.inject({ ...call, headers: adminAuth })
    expectError(res, 403, 'project_key_required', `${call.method} ${call.url}`)
  }
})

test('project routes: 401 without a token, with garbage, with an unknown key', async () => {
  for (const call of PROJECT_CALLS) {
    expectError(await app.inject(call), 401, 'missing_authorization', `${call.method} ${call.url}`)
    for (const token of [GARBAGE, UNKNOWN_KEY])
      expectError(
        await app.inject({ ...call, headers: bearer(token) }),
        401,
        'invalid_api_key',
        `${call.method} ${call.url} with ${token}`,
      )
  }
})

test('a key whose secret is wrong is refused even with a real prefix', async () => {
  const prefix = projectKey.slice(0, projectKey.indexOf('.'))
  const forged = `${prefix}.${'B'.repeat(43)}`
  assert.notEqual(forged, projectKey)
  expectError(
    await app.inject({ method: 'GET', url: '/v1/files', headers: bearer(forged) }),
    401,
    'invalid_api_key',
    'forged secret',
  )
  const ok = await app.inject({ method: 'GET', url: '/v1/files', headers: bearer(projectKey) })
  assert.equal(ok.statusCode, 200)
})

test('/healthz, /readyz and /docs/json are public', async () => {
  for (const url of ['/healthz', '/readyz', '/docs/json']) {
    const res = await app.inject(url)
    assert.equal(res.statusCode, 200, `${url}: ${res.body}`)
  }
  // a bad token on a public route is not looked at
  const res = await app.inject({ url: '/healthz', headers: bearer(GARBAGE) })
  assert.equal(res.statusCode, 200)
  assert.equal((await app.inject('/docs/json')).json().openapi, '3.1.0')
})

interface RouteEntry {
  method: string
  url: string
}

/** Every method + url the router holds, parsed from printRoutes (one tree node per line). */
function registeredRoutes(instance: FastifyInstance): RouteEntry[] {
  const out: RouteEntry[] = []
  const stack: string[] = []
  for (const line of instance.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:[│ ] {3})*)(?:├── |└── )(\S+) \(([A-Z, ]+)\)$/.exec(line)
    if (!m) {
      assert.equal(line.trim(), '', `unparsed printRoutes line: ${line}`)
      continue
    }
    const depth = m[1]!.length / 4
    stack.length = depth
    const url = stack.join('') + m[2]!
    stack.push(m[2]!)
    for (const method of m[3]!.split(', ')) out.push({ method, url })
  }
  return out
}

const isPublic = (url: string) => url === '/healthz' || url === '/readyz' || url === '/docs' || url.startsWith('/docs/')

/** The admin dashboard's page, assets and session routes (src/dashboard/routes.ts). */
const isDashboardPublic = (url: string) =>
  url === '/admin' || url.startsWith('/admin/assets/') || url === '/admin/session'

const concrete = (url: string) =>
  url === '/admin/queues/*' // Bull Board's static files, as the route walk reads them
    ? '/admin/queues/static/x.js'
    : url.replace(/:id/g, 'x-doesnotexist').replace(/\*$/, 'json')

test('every registered route (HEAD twins included) enforces the auth it declares', async () => {
  const routes = registeredRoutes(app)
  // the walk found the routes we know of, so an empty or broken parse cannot pass
  assert.ok(routes.length >= 40, `only ${routes.length} routes parsed`)
  for (const expected of [
    'POST /v1/admin/projects/:id/api_keys',
    'HEAD /v1/fine_tuning/jobs/:id/metrics',
    'DELETE /v1/files/:id',
    'GET /v1/models/:id/content',
    'GET /docs/json',
  ])
    assert.ok(
      routes.some((r) => `${r.method} ${r.url}` === expected),
      `${expected} missing from the walk`,
    )

  const checked = { public: 0, admin: 0, project: 0 }
  for (const { method, url } of routes) {
    const what = `${method} ${url}`
    const call = { method: method as InjectOptions['method'], url: concrete(url) }
    if (isPublic(url)) {
      const res = await app.inject(call)
      assert.ok(res.statusCode < 400, `${what} should be public, got ${res.statusCode}`)
      checked.public++
      continue
    }
    if (isDashboardPublic(url)) {
      // the page, its assets and sign-in/out: open to anyone (sign-in without a body is a 400, not a 401)
      const res = await app.inject(call)
      assert.ok(![401, 403].includes(res.statusCode), `${what} should be public, got ${res.statusCode}`)
      checked.public++
      continue
    }
    expectError(await app.inject(call), 401, 'missing_authorization', `${what} without a token`)
    expectError(await app.inject({ ...call, headers: bearer(GARBAGE) }), 401, 'invalid_api_key', `${what} garbage`)
    if (url.startsWith('/v1/admin/') || url.startsWith('/admin/queues') || url === '/metrics') {
      expectError(await app.inject({ ...call, headers: bearer(projectKey) }), 403, 'admin_required', what)
      const res = await app.inject({ ...call, headers: adminAuth })
      assert.ok(![401, 403].includes(res.statusCode), `${what} refused the admin token: ${res.statusCode}`)
      checked.admin++
    } else {
      expectError(await app.inject({ ...call, headers: adminAuth }), 403, 'project_key_required', what)
      const res = await app.inject({ ...call, headers: bearer(projectKey) })
      assert.ok(![401, 403].includes(res.statusCode), `${what} refused the project key: ${res.statusCode}`)
      checked.project++
    }
  }
  assert.ok(checked.admin >= 3 && checked.project >= 25 && checked.public >= 10, JSON.stringify(checked))
})

test('the OpenAPI document declares the security every route enforces, and lists every API route', async () => {
  const doc = (await app.inject('/docs/json')).json() as {
    paths: Record<string, Record<string, { security?: Record<string, string[]>[]; operationId?: string }>>
    components: { securitySchemes: Record<string, unknown> }
  }
  assert.deepEqual(Object.keys(doc.components.securitySchemes).sort(), ['adminToken', 'metricsToken', 'projectKey'])
  const documented = new Set<string>()
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const what = `${method.toUpperCase()} ${path}`
      documented.add(`${method.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`)
      assert.ok(op.operationId, `${what} has no operationId`)
      if (path === '/healthz' || path === '/readyz' || isDashboardPublic(path)) assert.deepEqual(op.security, [], what)
      else if (path.startsWith('/v1/admin/')) assert.deepEqual(op.security, [{ adminToken: [] }], what)
      else if (path === '/metrics') assert.deepEqual(op.security, [{ adminToken: [] }, { metricsToken: [] }], what)
      else assert.deepEqual(op.security, [{ projectKey: [] }], what)
    }
  }
  // No API route is left out of the document (HEAD twins and the docs' own routes are not documented).
  const apiRoutes = registeredRoutes(app)
    .filter((r) => r.method !== 'HEAD' && r.url !== '/docs' && !r.url.startsWith('/docs/'))
    // the dashboard's page and assets and Bull Board's own routes are not API routes
    .filter((r) => r.url !== '/admin' && !r.url.startsWith('/admin/assets/') && !r.url.startsWith('/admin/queues'))
    .map((r) => `${r.method} ${r.url}`)
  const registered = new Set(apiRoutes)
  assert.deepEqual(
    {
      undocumented: [...registered].filter((r) => !documented.has(r)).sort(),
      unknown: [...documented].filter((r) => !registered.has(r)).sort(),
    },
    { undocumented: [], unknown: [] },
  )
})

test('a route without an auth declaration refuses to start', async () => {
  // The guard in the auth plugin: register one undeclared route on a fresh app and expect ready() to throw.
  const { buildApp } = await import('../../src/app.js')
  const fresh = await buildApp({ config: env.config, adminToken: ADMIN_TOKEN, logger: false })
  try {
    assert.throws(
      () => fresh.get('/v1/undeclared', async () => ({ ok: true })),
      /route GET \/v1\/undeclared does not declare config\.auth/,
    )
    // a declared one is accepted by the same guard
    fresh.get('/v1/declared', { config: { auth: 'project' } }, async () => ({ ok: true }))
    await fresh.ready()
    assert.equal((await fresh.inject('/v1/declared')).statusCode, 401)
  } finally {
    await fresh.close().catch(() => {})
  }
})

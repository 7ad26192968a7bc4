// Webhooks cannot reach the inside (issue 13, items 1-2): registration refuses every spelling of an
// internal address, the dispatcher re-checks the address it connects to (a rebinding resolver answers a
// public address at registration, then 127.0.0.1: the local listener sees no connection), redirects are
// not followed, the log keeps no body, a receiver that never answers is cut by the timeout while another
// project's delivery goes through, and the per-project webhook cap holds under concurrent creates.
import assert from 'node:assert/strict'
import type { LookupAddress } from 'node:dns'
import { createServer } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { newId } from '../../src/lib/ids.js'
import { isPublicAddress, sendWebhook } from '../../src/modules/webhooks/safe-delivery.js'
import { recordJobTerminal } from '../../src/modules/webhooks/webhooks-service.js'
import type { Logger } from '../../workers/deps.js'
import { startWebhookDispatcher } from '../../workers/webhook-dispatcher.js'
import { ADMIN_TOKEN, bearer, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
const PUBLIC = '93.184.215.14'
/** A rebinding DNS server: each name answers a public address the first time, 127.0.0.1 afterwards. */
const asked = new Map<string, number>()
async function rebindingResolver(host: string): Promise<LookupAddress[]> {
  const n = asked.get(host) ?? 0
  asked.set(host, n + 1)
  if (host.endsWith('.rebind.test')) return [{ address: n === 0 ? PUBLIC : '127.0.0.1', family: 4 }]
  if (host.endsWith('.public.test')) return [{ address: PUBLIC, family: 4 }]
  if (host.endsWith('.mixed.test'))
    return [
      { address: PUBLIC, family: 4 },
      { address: '10.0.0.7', family: 4 },
    ]
  if (host.endsWith('.mapped.test')) return [{ address: '::ffff:169.254.169.254', family: 6 }]
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' })
}

const silent: Logger = { info() {}, warn() {}, error() {} }

before(async () => {
  env = await createTestEnv('webhook_ssrf', { MAX_WEBHOOKS_PER_PROJECT: '3' })
  app = await buildApp({
    config: env.config,
    adminToken: ADMIN_TOKEN,
    logger: false,
    webhookResolver: rebindingResolver,
  })
  await app.ready()
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

/** A listener that counts TCP connections, whatever they carry. */
async function listener(handler?: Parameters<typeof createServer>[1]) {
  const sockets: Socket[] = []
  const server = createServer(handler ?? ((_req, res) => res.end('ok')))
  server.on('connection', (s) => sockets.push(s))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const { port } = server.address() as AddressInfo
  return {
    port,
    connections: () => sockets.length,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

async function createHook(auth: { authorization: string }, url: string) {
  return app.inject({ method: 'POST', url: '/v1/webhooks', headers: auth, payload: { url } })
}

async function finishedJob(projectId: string) {
  const fileId = newId('file')
  await app.db.file.create({
    data: {
      id: fileId,
      projectId,
      filename: 'd.csv',
      purpose: 'fine-tune',
      format: 'csv',
      bytes: 1n,
      sha256: '0'.repeat(64),
      status: 'processed',
    },
  })
  const id = newId('ftjob')
  await app.db.fineTuningJob.create({
    data: {
      id,
      projectId,
      baseModelId: 'mnist-cnn',
      trainingFileId: fileId,
      method: { type: 'transfer' },
      hyperparameters: {},
      seed: 1,
      status: 'succeeded',
      finishedAt: new Date(),
    },
  })
  await recordJobTerminal(app.db, id)
  return id
}

test('registration refuses internal addresses in any spelling, and names that resolve to them', async () => {
  const { key } = await createProjectKey(app, 'spellings')
  const auth = bearer(key)
  const internal = [
    'http://127.0.0.1/h',
    'http://2130706433/h', // decimal
    'http://0x7f000001/h', // hex
    'http://0177.0.0.1/h', // octal
    'http://127.1/h', // short form
    'http://0/h', // 0.0.0.0
    'http://[::1]/h',
    'http://[::]/h',
    'http://[::ffff:127.0.0.1]/h', // IPv4-mapped
    'http://[::127.0.0.1]/h', // IPv4-compatible
    'http://[64:ff9b::a9fe:a9fe]/h', // NAT64 of 169.254.169.254
    'http://169.254.169.254/latest/meta-data/',
    'http://10.0.0.1/h',
    'http://172.16.5.4/h',
    'http://192.168.1.1/h',
    'http://100.64.0.1/h', // CGNAT
    'http://[fd00::1]/h', // ULA
    'http://[fe80::1]/h',
    'http://224.0.0.1/h',
    'http://255.255.255.255/h',
    'https://localhost/h',
    'http://localhost./h', // trailing dot
    'http://api.localhost/h',
    'http://127.0.0.1.:8080/h',
    'http://inside.mixed.test/h', // one of its addresses is private
    'http://meta.mapped.test/h', // resolves to ::ffff:169.254.169.254
  ]
  for (const url of internal) {
    const res = await createHook(auth, url)
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`)
    assert.equal(res.json().error.code, 'webhook_url_forbidden', url)
  }
  const unresolvable = await createHook(auth, 'http://nowhere.invalid/h')
  assert.equal(unresolvable.statusCode, 400)
  assert.equal(unresolvable.json().error.code, 'invalid_webhook_url')
  for (const url of [`http://${PUBLIC}/h`, 'https://hooks.public.test/h']) {
    const res = await createHook(auth, url)
    assert.equal(res.statusCode, 201, `${url}: ${res.body}`)
  }
  // The classifier itself, on the forms a resolver can answer.
  for (const a of ['8.8.8.8', '2606:4700::1111']) assert.ok(isPublicAddress(a), a)
  for (const a of ['::ffff:10.0.0.1', '2002:7f00:1::', '192.0.2.1', '100::1', 'not-an-ip'])
    assert.ok(!isPublicAddress(a), a)
})

test('DNS rebinding: a name that was public at registration and is 127.0.0.1 now gets no connection', async () => {
  const { projectId, key } = await createProjectKey(app, 'rebind')
  const inside = await listener()
  try {
    const created = await createHook(bearer(key), `http://evil.rebind.test:${inside.port}/hook`)
    assert.equal(created.statusCode, 201, created.body)
    await finishedJob(projectId)
    const dispatcher = startWebhookDispatcher(
      { db: app.db, log: silent, config: env.config },
      { intervalMs: 50, maxAttempts: 1, policy: { allowPrivate: false, resolve: rebindingResolver } },
    )
    try {
      const delivery = await waitFor(
        async () => {
          const res = await app.inject({
            method: 'GET',
            url: `/v1/webhooks/${created.json().id}/deliveries`,
            headers: bearer(key),
          })
          return res.json().data.find((d: any) => d.status === 'failed')
        },
        10_000,
        'the delivery to fail',
      )
      assert.equal(delivery.error_class, 'forbidden_address')
      assert.match(delivery.last_error, /127\.0\.0\.1/)
    } finally {
      await dispatcher.close()
    }
    assert.ok((asked.get('evil.rebind.test') ?? 0) >= 2, 'resolved again at connect time')
    assert.equal(inside.connections(), 0, 'the inside listener saw no connection')
  } finally {
    await inside.close()
  }
})

test('a literal private address in a stored url is refused at send time too', async () => {
  const inside = await listener()
  try {
    const r = await sendWebhook({
      url: `http://127.0.0.1:${inside.port}/`,
      headers: {},
      body: '{}',
      timeoutMs: 2000,
      policy: { allowPrivate: false },
    })
    assert.equal(r.errorClass, 'forbidden_address')
    assert.equal(inside.connections(), 0)
  } finally {
    await inside.close()
  }
})

test('redirects are not followed, and the answer body is never kept', async () => {
  const target = await listener()
  const redirector = await listener((_req, res) =>
    res.writeHead(302, { location: `http://127.0.0.1:${target.port}/` }).end('SECRET-REDIRECT-BODY'),
  )
  const failing = await listener((_req, res) => res.writeHead(500).end('SECRET-ERROR-BODY'))
  try {
    const policy = { allowPrivate: true }
    const r = await sendWebhook({
      url: `http://127.0.0.1:${redirector.port}/`,
      headers: {},
      body: '{}',
      timeoutMs: 2000,
      policy,
    })
    assert.deepEqual([r.ok, r.status, r.errorClass], [false, 302, 'redirect'])
    assert.equal(target.connections(), 0, 'the redirect target was never contacted')
    const f = await sendWebhook({
      url: `http://127.0.0.1:${failing.port}/`,
      headers: {},
      body: '{}',
      timeoutMs: 2000,
      policy,
    })
    assert.deepEqual([f.status, f.errorClass, f.error], [500, 'http_status', 'HTTP 500'])
    assert.ok(!JSON.stringify([r, f]).includes('SECRET'), 'no body in the result')
  } finally {
    await Promise.all([target.close(), redirector.close(), failing.close()])
  }
})

test('a receiver that accepts and never answers is cut by the timeout; another project is delivered meanwhile', async () => {
  const hang = await listener(() => {}) // accepts, reads, never answers
  const good = await listener()
  try {
    // Twenty hung attempts at once, garbage collection meanwhile: every timer still fires.
    const hung = Promise.all(
      Array.from({ length: 20 }, () =>
        sendWebhook({
          url: `http://127.0.0.1:${hang.port}/`,
          headers: {},
          body: '{}',
          timeoutMs: 800,
          policy: { allowPrivate: true },
        }),
      ),
    )
    ;(globalThis as { gc?: () => void }).gc?.()
    const t0 = Date.now()
    const ok = await sendWebhook({
      url: `http://127.0.0.1:${good.port}/`,
      headers: {},
      body: '{}',
      timeoutMs: 5000,
      policy: { allowPrivate: true },
    })
    assert.equal(ok.ok, true)
    assert.ok(Date.now() - t0 < 800, 'the other receiver was answered before the hung ones timed out')
    for (const r of await hung) {
      assert.equal(r.errorClass, 'timeout')
      assert.ok(r.durationMs >= 790 && r.durationMs < 5000, `cut near the deadline (${r.durationMs} ms)`)
    }
  } finally {
    await Promise.all([hang.close(), good.close()])
  }
})

test('MAX_WEBHOOKS_PER_PROJECT holds under 20 simultaneous creates', async () => {
  const { key } = await createProjectKey(app, 'cap')
  const answers = await Promise.all(Array.from({ length: 20 }, () => createHook(bearer(key), `http://${PUBLIC}/h`)))
  const created = answers.filter((a) => a.statusCode === 201).length
  assert.equal(created, 3)
  const refused = answers.filter((a) => a.statusCode === 403)
  assert.equal(refused.length, 17)
  assert.equal(refused[0].json().error.code, 'too_many_webhooks')
})

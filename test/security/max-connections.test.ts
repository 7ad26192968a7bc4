// MAX_CONNECTIONS (issue 13, item 3) on the server main.ts starts (startServer) through raw sockets: past
// the limit a connection is closed at accept, those within it stay open, and once the holders go the
// server answers /healthz again: one client holding sockets cannot keep the service unreachable for good.
import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { startServer } from '../../src/server.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'

const LIMIT = 4
let env: TestEnv
let app: FastifyInstance
let port: number

before(async () => {
  env = await createTestEnv('max_connections', { MAX_CONNECTIONS: String(LIMIT), PORT: '0', HOST: '127.0.0.1' })
  app = await startServer(env.config, ADMIN_TOKEN)
  port = (app.server.address() as { port: number }).port
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

const serverConnections = () =>
  new Promise<number>((resolve, reject) => app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))))

/** A raw socket that records whether the server closed it (and whether it sent anything first). */
function open() {
  const state = { closed: false, data: 0, socket: null as unknown as Socket }
  const connected = new Promise<void>((resolve) => {
    state.socket = connect(port, '127.0.0.1', () => resolve())
    state.socket.on('data', (d) => {
      state.data += d.length
    })
    state.socket.on('error', () => {})
    state.socket.on('close', () => {
      state.closed = true
      resolve()
    })
  })
  return { state, connected }
}

test('connections past MAX_CONNECTIONS are closed at accept; /healthz answers once the holders go', async () => {
  // an answer from a fresh connection first: the server works
  assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: 'close' } })).status, 200)
  await waitFor(async () => (await serverConnections()) === 0, 10_000, 'the first connection to close')

  // LIMIT idle sockets take every slot
  const holders = Array.from({ length: LIMIT }, open)
  await Promise.all(holders.map((h) => h.connected))
  await waitFor(async () => (await serverConnections()) === LIMIT, 10_000, `${LIMIT} connections accepted`)

  // more connections are accepted by the kernel and closed by the server at once, without a byte
  const extra = Array.from({ length: 3 }, open)
  await Promise.all(extra.map((h) => h.connected))
  await waitFor(async () => extra.every((h) => h.state.closed), 10_000, 'the connections past the limit to close')
  assert.ok(
    extra.every((h) => h.state.data === 0),
    'closed without an answer',
  )
  // an HTTP request over a new connection gets no answer either
  await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: 'close' } }))
  // the holders were not touched
  assert.ok(
    holders.every((h) => !h.state.closed),
    'the connections within the limit stay open',
  )
  assert.equal(await serverConnections(), LIMIT)

  // the holders go: the service answers again
  for (const h of holders) h.state.socket.destroy()
  await waitFor(async () => (await serverConnections()) === 0, 10_000, 'the holders to be gone')
  const res = await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { connection: 'close' } })
  assert.equal(res.status, 200)
  assert.equal((await res.json()).status, 'ok')
})

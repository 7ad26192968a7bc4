// The admin door (issue 13, item 8): POST /admin/session has its own per-address limiter (5 free
// failures, then a doubling delay answered 429 + Retry-After, successes never counted), TRUST_PROXY
// decides which address and protocol a request has, and the session cookie is Secure on (proxied) https
// or always with COOKIE_SECURE.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import type { Config } from '../../src/config.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv } from '../helpers/env.js'

let env: TestEnv
const apps: FastifyInstance[] = []

before(async () => {
  env = await createTestEnv('admin_door')
})
after(async () => {
  for (const a of apps) await a.close()
  await env?.cleanup()
})

async function appWith(overrides: Partial<Config> = {}) {
  const a = await buildApp({ config: { ...env.config, ...overrides }, adminToken: ADMIN_TOKEN, logger: false })
  await a.ready()
  apps.push(a)
  return a
}

const signIn = (a: FastifyInstance, token: string, headers: Record<string, string> = {}, remoteAddress = '10.9.8.7') =>
  a.inject({ method: 'POST', url: '/admin/session', payload: { token }, headers, remoteAddress })

test('5 failures are free, then a doubling delay (429 + Retry-After) that even the right token waits out', async () => {
  const a = await appWith()
  for (let i = 0; i < 4; i++) assert.equal((await signIn(a, 'wrong-token-000000')).statusCode, 401)
  const ok = await signIn(a, ADMIN_TOKEN)
  assert.equal(ok.statusCode, 201, 'a success in between is not counted against the address')
  for (let i = 0; i < 5; i++) assert.equal((await signIn(a, 'wrong-token-000000')).statusCode, 401, `failure ${i + 1}`)
  const blocked = await signIn(a, ADMIN_TOKEN)
  assert.equal(blocked.statusCode, 429, blocked.body)
  assert.equal(blocked.json().error.code, 'too_many_sign_in_attempts')
  assert.equal(blocked.headers['retry-after'], '1')
  assert.equal((await signIn(a, ADMIN_TOKEN, {}, '10.9.8.6')).statusCode, 201, 'another address is not affected')
  await new Promise((r) => setTimeout(r, 1100))
  assert.equal((await signIn(a, 'wrong-token-000000')).statusCode, 401) // the 6th failure: 2 s now
  const doubled = await signIn(a, 'wrong-token-000000')
  assert.equal(doubled.statusCode, 429)
  assert.equal(doubled.headers['retry-after'], '2')
})

test('TRUST_PROXY decides the address and protocol; the cookie is Secure on proxied https or with COOKIE_SECURE', async () => {
  const proxied = { 'x-forwarded-proto': 'https', 'x-forwarded-for': '203.0.113.50' }
  const plain = await appWith()
  const untrusted = await signIn(plain, ADMIN_TOKEN, proxied, '10.1.1.1')
  assert.equal(untrusted.statusCode, 201)
  assert.doesNotMatch(
    String(untrusted.headers['set-cookie']),
    /Secure/,
    'forwarded headers are ignored without TRUST_PROXY',
  )

  const trusting = await appWith({ trustProxy: true })
  const behindProxy = await signIn(trusting, ADMIN_TOKEN, proxied, '10.1.1.2')
  assert.match(String(behindProxy.headers['set-cookie']), /; Secure/)
  // The limiter counts the forwarded client, not the proxy.
  for (let i = 0; i < 5; i++)
    await signIn(trusting, 'wrong-token-000000', { 'x-forwarded-for': '203.0.113.77' }, '10.1.1.2')
  assert.equal((await signIn(trusting, ADMIN_TOKEN, { 'x-forwarded-for': '203.0.113.77' }, '10.1.1.2')).statusCode, 429)
  assert.equal((await signIn(trusting, ADMIN_TOKEN, { 'x-forwarded-for': '203.0.113.78' }, '10.1.1.2')).statusCode, 201)

  const forced = await appWith({ cookieSecure: true })
  assert.match(String((await signIn(forced, ADMIN_TOKEN, {}, '10.1.1.3')).headers['set-cookie']), /; Secure/)
})

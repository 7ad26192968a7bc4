// Live event streams are bounded per key and per project across API processes, and a revoked key's
// streams close (issue 13, item 4). Two listening API instances share one database and one Redis prefix,
// as two API processes of a deployment do; the streams are real HTTP responses read by fetch.
import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { adminAuth, buildTestApp, createProjectKey, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { insertJobRow } from '../helpers/job-rows.js'

let env: TestEnv
let api1: FastifyInstance
let api2: FastifyInstance
const urls: string[] = []

before(async () => {
  env = await createTestEnv('streams', { MAX_STREAMS_PER_KEY: '2', MAX_STREAMS_PER_PROJECT: '3' })
  api1 = await buildTestApp(env.config)
  api2 = await buildTestApp(env.config)
  for (const a of [api1, api2]) {
    await a.listen({ port: 0, host: '127.0.0.1' })
    urls.push(`http://127.0.0.1:${(a.server.address() as { port: number }).port}`)
  }
})
after(async () => {
  await api1?.close()
  await api2?.close()
  await env?.cleanup()
})

interface Stream {
  status: number
  body: string
  /** resolves when the server ends the stream */
  ended: Promise<void>
  abort(): void
}

async function open(base: string, key: string, jobId: string): Promise<Stream> {
  const ctl = new AbortController()
  const res = await fetch(`${base}/v1/fine_tuning/jobs/${jobId}/events?stream=true`, {
    headers: { authorization: `Bearer ${key}` },
    signal: ctl.signal,
  })
  if (res.status !== 200) return { status: res.status, body: await res.text(), ended: Promise.resolve(), abort() {} }
  const reader = res.body!.getReader()
  const ended = (async () => {
    try {
      while (!(await reader.read()).done) {}
    } catch {
      // aborted by the test
    }
  })()
  return { status: 200, body: '', ended, abort: () => ctl.abort() }
}

test('streams are capped per key and per project across API processes; a revoked key’s streams close', async () => {
  const { projectId, key: key1 } = await createProjectKey(api1, 'streams')
  const k2 = await api1.inject({
    method: 'POST',
    url: `/v1/admin/projects/${projectId}/api_keys`,
    headers: adminAuth,
    payload: {},
  })
  const key2 = k2.json().key as string
  const key2Id = k2.json().id as string
  const jobId = await insertJobRow(api1.db, projectId, 'running')

  const a = await open(urls[0], key1, jobId)
  const b = await open(urls[1], key1, jobId)
  assert.equal(a.status, 200)
  assert.equal(b.status, 200)
  // the key's third stream, on either process
  const c = await open(urls[0], key1, jobId)
  assert.equal(c.status, 429, c.body)
  assert.equal(JSON.parse(c.body).error.code, 'too_many_streams')
  const d = await open(urls[1], key2, jobId)
  assert.equal(d.status, 200)
  // the project's fourth stream, with a key that has room
  const e = await open(urls[0], key2, jobId)
  assert.equal(e.status, 429, e.body)
  assert.match(JSON.parse(e.body).error.message, /MAX_STREAMS_PER_PROJECT/)

  // a closed stream gives its slots back
  a.abort()
  const again = await waitFor(
    async () => {
      const s = await open(urls[0], key1, jobId)
      return s.status === 200 && s
    },
    10_000,
    'a slot after a stream closed',
  )

  // revoking key2 on one process ends its stream on the other
  const revoke = await api1.inject({
    method: 'DELETE',
    url: `/v1/admin/projects/${projectId}/api_keys/${key2Id}`,
    headers: adminAuth,
  })
  assert.equal(revoke.statusCode, 200, revoke.body)
  await Promise.race([
    d.ended,
    new Promise((_, reject) => setTimeout(() => reject(new Error("the revoked key's stream stayed open")), 10_000)),
  ])
  // and its slot is free again for the project (key1 has its own room: 1 of 2 in use after `again` opened)
  b.abort()
  again.abort()
})

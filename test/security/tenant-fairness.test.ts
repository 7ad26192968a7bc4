// One tenant cannot hold another's dataset validations, and a poison file fails cleanly (issue 13, items 2
// and 6), on the real service (API + worker processes). The project slot is held from the test through
// Redis exactly as a long validation would hold it, so the check does not depend on timing.
import assert from 'node:assert/strict'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { Redis } from 'ioredis'
import { slotKey, takeSlot } from '../../src/queue/project-slots.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let service: RunningService
let redis: Redis

before(async () => {
  env = await createTestEnv('tenant_fairness')
  service = await startService(env.env)
  redis = new Redis(env.config.redisUrl)
})
after(async () => {
  redis?.disconnect()
  await service?.stop()
  await env?.cleanup()
})

async function projectClient(name: string) {
  const admin = httpClient(service.url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name })
  const key = await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, { name: 'k' })
  return { projectId: project.body.id as string, api: httpClient(service.url, key.body.key) }
}

const csv = () => {
  let s = 'x,y,label\n'
  for (let i = 0; i < 40; i++) s += `${i},${i % 7},${i % 2 ? 'a' : 'b'}\n`
  return Buffer.from(s)
}

const fileStatus = async (api: ReturnType<typeof httpClient>, id: string) => (await api.get(`/v1/files/${id}`)).body

test("one project's validation in flight does not hold another project's; its own wait their turn", async () => {
  const a = await projectClient('busy')
  const b = await projectClient('other')
  // Project A is "validating a 60,000-entry zip": its slot is taken.
  const held = await takeSlot(redis, slotKey(env.config.queuePrefix, 'files', a.projectId), 'long-validation', 1)
  assert.ok(held)
  try {
    const fa = await a.api.upload('/v1/files', csv(), 'a.csv', { purpose: 'fine-tune' })
    const fb = await b.api.upload('/v1/files', csv(), 'b.csv', { purpose: 'fine-tune' })
    assert.equal(fa.status, 201, JSON.stringify(fa.body))
    await waitFor(async () => (await fileStatus(b.api, fb.body.id)).status === 'processed', 30_000, 'B validated')
    await new Promise((r) => setTimeout(r, 1500))
    assert.equal((await fileStatus(a.api, fa.body.id)).status, 'uploaded', "A's second file waits for A's slot")
    await held.release()
    await waitFor(async () => (await fileStatus(a.api, fa.body.id)).status === 'processed', 30_000, 'A validated')
  } finally {
    await held.release()
  }
})

test('a file whose validation throws on every attempt ends `error` (validation_failed) and its waiting job fails', async () => {
  const a = await projectClient('poison')
  const held = await takeSlot(redis, slotKey(env.config.queuePrefix, 'files', a.projectId), 'hold', 1)
  assert.ok(held)
  const f = await a.api.upload('/v1/files', csv(), 'p.csv', { purpose: 'fine-tune' })
  assert.equal(f.status, 201, JSON.stringify(f.body))
  // The stored bytes vanish: every read the validator tries throws (not a dataset error, so it is retried).
  await rm(join(env.config.storageDir, 'files', f.body.id), { force: true })
  const job = await a.api.post('/v1/fine_tuning/jobs', {
    model: 'mlp-small',
    training_file: f.body.id,
    method: { type: 'supervised' },
  })
  assert.equal(job.status, 200, JSON.stringify(job.body))
  assert.equal(job.body.status, 'validating_files')
  await held.release()
  const file = await waitFor(
    async () => {
      const s = await fileStatus(a.api, f.body.id)
      return s.status === 'error' && s
    },
    30_000,
    'the file to end in error',
  )
  assert.equal(file.error.code, 'validation_failed')
  const failed = await waitFor(
    async () => {
      const j = (await a.api.get(`/v1/fine_tuning/jobs/${job.body.id}`)).body
      return j.status === 'failed' && j
    },
    10_000,
    'the waiting job to fail',
  )
  assert.match(failed.error?.message ?? failed.status_reason ?? '', /failed validation|validation/i)
})

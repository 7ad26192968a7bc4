// The API SIGKILLed in the middle of an upload: the partial bytes sit in the storage's tmp/ with no row
// pointing at them; the worker's sweeper removes them, and no file row or stored file is left.
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'
import { startWorkerProcess, type WorkerProcess } from '../helpers/worker-process.js'

let env: TestEnv
let service: RunningService
let sweeper: WorkerProcess | undefined

before(async () => {
  env = await createTestEnv('upload_crash', { TMP_MAX_AGE_MS: '1000', RECONCILE_INTERVAL_MS: '300' })
  service = await startService(env.env)
})
after(async () => {
  await service?.stop()
  await sweeper?.kill('SIGKILL')
  await env?.cleanup()
})

const list = (dir: string) => readdir(join(env.config.storageDir, dir)).catch(() => [] as string[])

test('SIGKILL of the API mid-upload leaves nothing once the sweeper has run', async () => {
  const admin = httpClient(service.url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name: 'crash' })
  const key = (await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, {})).body.key as string

  // Start a multipart upload and keep it open: 8 MB sent, the rest never comes.
  const boundary = 'refitcrashboundary'
  const req = request(`${service.url}/v1/files`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': `multipart/form-data; boundary=${boundary}` },
  })
  req.on('error', () => {})
  req.write(`--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n`)
  req.write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\nx,label\n`)
  const row = Buffer.from('1,0\n'.repeat(16 * 1024))
  for (let i = 0; i < 128; i++) req.write(row)
  await waitFor(async () => (await list('tmp')).length > 0, 10_000, 'the partial upload in tmp/')

  service.child.kill('SIGKILL')
  await new Promise((r) => service.child.once('exit', r))
  req.destroy()
  assert.ok((await list('tmp')).length > 0, 'the crash left a partial file')

  sweeper = await startWorkerProcess(env.env)
  await waitFor(async () => (await list('tmp')).length === 0, 15_000, 'the sweeper to remove it')
  assert.deepEqual(await list('files'), [])
  const { createDb } = await import('../../src/db/client.js')
  const db = createDb(env.config.databaseUrl, 1)
  assert.equal(await db.file.count(), 0, 'no file row')
  await db.$disconnect()
})

// Small steps the lifecycle tests share, through the real API (app.inject).
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { bearer, multipart, waitFor } from './env.js'

export const TERMINAL = ['succeeded', 'failed', 'cancelled']

/** Uploads `limit` images of digits 5-9 as IDX and waits until a worker validated them. */
export async function uploadDigits(app: FastifyInstance, key: string, dir: string, limit: number): Promise<string> {
  const out = join(dir, `digits-${limit}.zip`)
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit, out })
  const body = multipart({ purpose: 'fine-tune' }, { name: 'digits.zip', content: await readFile(out) })
  const up = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(up.statusCode, 201, up.body)
  const id = up.json().id as string
  await waitFor(
    async () => (await app.db.file.findUnique({ where: { id } }))?.status === 'processed',
    60_000,
    'file validation',
  )
  return id
}

export async function createTransferJob(
  app: FastifyInstance,
  key: string,
  fileId: string,
  hyperparameters: Record<string, unknown>,
  headers: Record<string, string> = {},
) {
  const res = await app.inject({
    method: 'POST',
    url: '/v1/fine_tuning/jobs',
    headers: { ...bearer(key), ...headers },
    payload: {
      model: 'mnist-cnn',
      training_file: fileId,
      seed: 5,
      method: { type: 'transfer', transfer: { hyperparameters } },
    },
  })
  assert.equal(res.statusCode, 200, res.body)
  return res.json()
}

export async function waitForTerminal(app: FastifyInstance, jobId: string, timeoutMs = 180_000) {
  return waitFor(
    async () => {
      const j = await app.db.fineTuningJob.findUnique({ where: { id: jobId } })
      return j && TERMINAL.includes(j.status) && j
    },
    timeoutMs,
    `job ${jobId} to finish`,
  )
}

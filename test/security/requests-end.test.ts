// Requests end (issue 13, item 3), on a listening API with real inference processes and raw sockets: a
// prediction past REQUEST_TIMEOUT_MS answers 504 prediction_timeout and its inference process is killed
// and replaced; a body trickled slower than MIN_UPLOAD_BYTES_PER_SEC has its connection closed while a
// normal upload goes through; early 401 and 413 answers close the connection without waiting for the body.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { saveModel } from '../../src/engine/model-io.js'
import {
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { solidPng, zipBuffer } from '../helpers/memory-fixtures.js'

const require = createRequire(import.meta.url)
type TfNode = typeof import('@tensorflow/tfjs-node')
const tf: TfNode = require('@tensorflow/tfjs-node')

const TIMEOUT_MS = 3000
let env: TestEnv
let app: FastifyInstance
let key: string
let port: number
let work: string

before(async () => {
  env = await createTestEnv('requests_end', {
    INFERENCE_PROCESSES: '1',
    // The estimate sums every layer's activations; TF.js frees them layer by layer, so the heavy model's
    // real footprint is far smaller. Raised so the estimate does not refuse the prediction this test needs.
    INFERENCE_MEMORY_BYTES: String(8 * 1024 ** 3),
    REQUEST_TIMEOUT_MS: String(TIMEOUT_MS),
    MIN_UPLOAD_BYTES_PER_SEC: '2000',
    UPLOAD_RATE_WINDOW_MS: '1000',
  })
  app = await buildTestApp(env.config)
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as { port: number }).port
  ;({ key } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-requests-end-'))
})
after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

/** Saves `model` and uploads it through the API as an image classifier with two classes. */
async function upload(model: import('@tensorflow/tfjs-node').LayersModel, inputShape: number[]): Promise<string> {
  const dir = join(work, randomBytes(3).toString('hex'))
  await saveModel(tf as never, model as never, dir)
  model.dispose()
  const zipped = await zipBuffer({
    'model.json': await readFile(join(dir, 'model.json')),
    'weights.bin': await readFile(join(dir, 'weights.bin')),
  })
  const body = multipart(
    { input_shape: JSON.stringify(inputShape), classes: '["a","b"]' },
    { name: 'm.zip', content: zipped },
  )
  const res = await app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
  assert.equal(res.statusCode, 201, res.body)
  return res.json().id
}

/** `depth` 3x3 convolutions of 64 filters at `side` x `side`: ~22 GFLOP per layer and image at side 384. */
function convStack(side: number, depth: number) {
  const layers: import('@tensorflow/tfjs-node').layers.Layer[] = []
  for (let i = 0; i < depth; i++)
    layers.push(
      tf.layers.conv2d({
        ...(i === 0 ? { inputShape: [side, side, 3] } : {}),
        filters: 64,
        kernelSize: 3,
        padding: 'same',
        activation: 'relu',
      }),
    )
  layers.push(tf.layers.globalAveragePooling2d({}), tf.layers.dense({ units: 2, activation: 'softmax' }))
  return tf.sequential({ layers })
}

const predict = async (id: string, images: Buffer[]) =>
  app.inject({
    method: 'POST',
    url: `/v1/models/${encodeURIComponent(id)}/predictions`,
    headers: bearer(key),
    payload: { inputs: images.map((b) => ({ image: b.toString('base64') })) },
  })

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

test('a prediction past REQUEST_TIMEOUT_MS answers 504 prediction_timeout; its process is killed and replaced', async () => {
  const small = await upload(convStack(8, 1), [8, 8, 3])
  // 48 layers x 4 images x ~22 GFLOP: far past the 3 s deadline on CPU cores (16 x 2 took ~2 s here once
  // oneDNN ran it: too close to the deadline to prove anything).
  const heavy = await upload(convStack(384, 48), [384, 384, 3])
  const png = await solidPng(8, 8, 128)
  // The first prediction forks the process; a cold start on a busy machine may pass the deadline itself
  // (a 504 that keeps the starting process), so ask until it answers.
  await waitFor(async () => (await predict(small, [png])).statusCode === 200, 120_000, 'a warm inference process')
  const [first] = app.inference.pids()
  assert.ok(first)
  const res = await predict(heavy, [png, png, png, png])
  assert.equal(res.statusCode, 504, res.body)
  assert.equal(res.json().error.code, 'prediction_timeout')
  await waitFor(async () => !alive(first), 10_000, 'the process computing it to be killed')
  const replaced = await waitFor(
    async () => {
      const r = await predict(small, [png])
      return r.statusCode === 200 && app.inference.pids()[0]
    },
    120_000,
    'a replacement process answering',
  )
  assert.notEqual(replaced, first)
})

/** A raw HTTP/1.1 request: headers now, the body (if any) by the caller; resolves the answer head on close. */
function rawRequest(head: string): { socket: Socket; closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1')
  let got = ''
  socket.on('data', (d) => (got += d.toString('latin1')))
  socket.on('error', () => {})
  socket.write(head)
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(got)))
  return { socket, closed }
}

test('a body trickled below MIN_UPLOAD_BYTES_PER_SEC is cut; a normal upload goes through', async () => {
  const boundary = 'slowloris'
  const { socket, closed } = rawRequest(
    `POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 1000000\r\n\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\nx,label\r\n`,
  )
  // 20 bytes every 100 ms: 200 B/s against a floor of 2000 B/s.
  const trickle = setInterval(() => {
    if (!socket.destroyed) socket.write('1,a\r\n1,b\r\n1,a\r\n1,b\r\n')
  }, 100)
  try {
    await Promise.race([
      closed,
      new Promise((_, reject) => setTimeout(() => reject(new Error('the slow body was not cut')), 30_000)),
    ])
  } finally {
    clearInterval(trickle)
    socket.destroy()
  }
  let csv = 'x,y,label\n'
  for (let i = 0; i < 2000; i++) csv += `${i},${i % 7},${i % 2 ? 'a' : 'b'}\n`
  const body = multipart({ purpose: 'fine-tune' }, { name: 'ok.csv', content: Buffer.from(csv) })
  const res = await fetch(`http://127.0.0.1:${port}/v1/files`, {
    method: 'POST',
    headers: { ...bearer(key), ...body.headers },
    body: body.payload,
  })
  assert.equal(res.status, 201, await res.text())
})

test('an early 401 or 413 closes the connection without reading the announced body', async () => {
  const unauthorized = rawRequest(
    'POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n' +
      'Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000\r\n\r\n',
  )
  const head401 = await unauthorized.closed
  assert.match(head401, /^HTTP\/1\.1 401/)
  assert.match(head401, /connection: close/i)
  const tooLarge = rawRequest(
    `POST /v1/fine_tuning/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
      'Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n{',
  )
  const head413 = await tooLarge.closed
  assert.match(head413, /^HTTP\/1\.1 413/)
  assert.match(head413, /connection: close/i)
})

// A model downloaded from GET /v1/models/{id}/content loads with stock TF.js in a real browser
// (Debian's chromium) and predicts what the service predicts for the same images.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { createRequire } from 'node:module'
import { extname } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { chromiumMissing, launchChromium } from '../helpers/chromium.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, type TestEnv } from '../helpers/env.js'
import { unzipToMemory } from '../helpers/zip.js'
import { pngOf } from './helpers.js'

const require = createRequire(import.meta.url)
const skip = chromiumMissing()
let env: TestEnv
let app: FastifyInstance
let key: string
let server: Server
let origin: string
const files = new Map<string, Buffer>()

before(async () => {
  if (skip) return
  env = await createTestEnv('browser_load')
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  // A static origin for the page: the stock TF.js bundle and the downloaded model's files.
  files.set('/tf.min.js', await readFile(require.resolve('@tensorflow/tfjs/dist/tf.min.js')))
  files.set('/index.html', Buffer.from('<!doctype html><script src="/tf.min.js"></script>'))
  server = createServer((req, res) => {
    const body = files.get(req.url ?? '')
    if (!body) return res.writeHead(404).end()
    const type = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json' }[extname(req.url!)]
    res.writeHead(200, { 'content-type': type ?? 'application/octet-stream' }).end(body)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`
})

after(async () => {
  if (skip) return
  server?.close()
  await app?.close()
  await env?.cleanup()
})

test('the downloaded mnist-cnn zip loads in chromium with tf.loadLayersModel and matches the service', {
  skip: skip ?? false,
}, async () => {
  const zip = await app.inject({ url: '/v1/models/mnist-cnn/content', headers: bearer(key) })
  assert.equal(zip.statusCode, 200)
  for (const [name, content] of await unzipToMemory(zip.rawPayload)) files.set(`/model/${name}`, content)
  const metadata = JSON.parse(files.get('/model/metadata.json')!.toString())

  const digits = loadMnist('test', [0, 1, 2, 3, 4], 8)
  const pngs = await Promise.all(Array.from({ length: digits.rows }, (_, i) => pngOf(digits, i)))
  const service = await app.inject({
    method: 'POST',
    url: '/v1/models/mnist-cnn/predictions',
    headers: bearer(key),
    payload: { inputs: pngs.map((p) => ({ image: p.toString('base64') })), top_k: 5 },
  })
  assert.equal(service.statusCode, 200, service.body)

  const pixels = Array.from(digits.x as Uint8Array)
  const browser = await launchChromium()
  try {
    const page = await browser.context.newPage()
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(e.message))
    await page.goto(`${origin}/index.html`)
    const probs = (await page.evaluate(
      async ({ url, pixels, n, scale, offset }) => {
        const tf = (globalThis as any).tf
        const model = await tf.loadLayersModel(url)
        const x = tf.tensor4d(
          pixels.map((v: number) => v * scale + offset),
          [n, 28, 28, 1],
        )
        return Array.from(await model.predict(x).data())
      },
      {
        url: `${origin}/model/model.json`,
        pixels,
        n: digits.rows,
        scale: metadata.preprocessing.scale,
        offset: metadata.preprocessing.offset,
      },
    )) as number[]
    assert.deepEqual(errors, [])
    const classes = metadata.classes as string[]
    for (const [i, row] of (
      service.json().data as { predictions: { class: string; probability: number }[] }[]
    ).entries())
      for (const p of row.predictions) {
        const inBrowser = probs[i * classes.length + classes.indexOf(p.class)]
        assert.ok(
          Math.abs(inBrowser - p.probability) < 1e-4,
          `input ${i} class ${p.class}: ${inBrowser} vs ${p.probability}`,
        )
      }
  } finally {
    await browser.close()
  }
})

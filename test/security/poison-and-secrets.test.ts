// Poison input fails cleanly and secrets stay secret (issue 13, items 6 and 7): NUL and lone surrogates
// anywhere are 400s, non-finite numbers too, a truncated multipart body is a 400, a model with a layer
// class TF.js does not know is refused at upload, labels are bounded; stored idempotent answers hold no
// secrets and their replay is a 409, a multipart Idempotency-Key covers the file's bytes, /docs/json does
// not flood the log, and the admin token is printed only by the start that generated it.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { after, before, test } from 'node:test'
import * as tf from '@tensorflow/tfjs'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { DatasetValidationError, validateDataset } from '../../src/datasets/index.js'
import { projectRoot } from '../../src/lib/paths.js'
import { inspectModelJson } from '../../src/modules/models/model-upload.js'
import { TFJS_CLASS_NAMES } from '../../src/modules/models/tfjs-classes.js'
import {
  ADMIN_TOKEN,
  adminAuth,
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
} from '../helpers/env.js'
import { freePort } from '../helpers/service.js'

let env: TestEnv
let app: FastifyInstance
let auth: { authorization: string }
let projectId: string

before(async () => {
  env = await createTestEnv('poison_secrets', { WEBHOOK_ALLOW_PRIVATE: 'true' })
  app = await buildTestApp(env.config)
  const p = await createProjectKey(app, 'poison')
  auth = bearer(p.key)
  projectId = p.projectId
})
after(async () => {
  await app?.close()
  await env?.cleanup()
})

const json = (method: 'POST' | 'GET', url: string, raw: string) =>
  app.inject({ method, url, headers: { ...auth, 'content-type': 'application/json' }, payload: raw })

test('NUL and lone surrogates anywhere, and non-finite numbers, are 400 unsafe_input', async () => {
  const cases = [
    json('POST', '/v1/webhooks', '{"url": "http://example.com/\\u0000"}'),
    json('POST', '/v1/webhooks', '{"url": "http://example.com/\\ud800"}'),
    json(
      'POST',
      '/v1/fine_tuning/jobs',
      '{"model": "mnist-cnn", "training_file": "file-x", "metadata": {"\\udc00": "v"}}',
    ),
    json('POST', '/v1/fine_tuning/jobs', '{"model": "mnist-cnn\\u0000", "training_file": "file-x"}'),
    json('POST', '/v1/models/mnist-cnn/predictions', '{"inputs": [[1e999]]}'),
    app.inject({ method: 'GET', url: '/v1/files/file-%00abc', headers: auth }),
    app.inject({ method: 'GET', url: '/v1/files?after=%00', headers: auth }),
    app.inject({ method: 'POST', url: '/v1/admin/projects', headers: adminAuth, payload: { name: 'a\u0000b' } }),
  ]
  for (const [i, res] of (await Promise.all(cases)).entries()) {
    assert.equal(res.statusCode, 400, `case ${i}: ${res.body}`)
    assert.equal(res.json().error.code, 'unsafe_input', `case ${i}: ${res.body}`)
  }
  const body = multipart(
    { purpose: 'fine-tune', label_column: 'la\u0000bel' },
    { name: 'd.csv', content: Buffer.from('x,label\n1,a\n2,b\n') },
  )
  const mp = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...body.headers },
    payload: body.payload,
  })
  assert.equal(mp.statusCode, 400, mp.body)
  assert.equal(mp.json().error.code, 'unsafe_input')
})

test('a truncated multipart body is 400 invalid_multipart', async () => {
  const body = multipart(
    { purpose: 'fine-tune' },
    { name: 'd.csv', content: Buffer.from('x,label\n1,a\n2,b\n'.repeat(200)) },
  )
  const cut = body.payload.subarray(0, body.payload.length - 300) // no closing boundary
  const res = await app.inject({
    method: 'POST',
    url: '/v1/files',
    headers: { ...auth, ...body.headers },
    payload: cut,
  })
  assert.equal(res.statusCode, 400, res.body)
  assert.equal(res.json().error.code, 'invalid_multipart')
  const files = await app.db.file.count({ where: { projectId } })
  assert.equal(files, 0, 'nothing recorded')
})

test('a model whose layer class TF.js does not know is refused at upload; the class list matches TF.js', async () => {
  const text = await readFile(join(projectRoot, 'src/builtin-models/mnist-cnn/model.json'), 'utf8')
  const model = JSON.parse(text)
  const files = new Map<string, { uncompressedSize: number }>()
  for (const g of model.weightsManifest) for (const p of g.paths) files.set(p, { uncompressedSize: 10 ** 7 })
  const layers = model.modelTopology.config.layers ?? model.modelTopology.config
  layers[1].class_name = 'MyCustomAttention'
  assert.throws(
    () => inspectModelJson('model.json', JSON.stringify(model), files),
    (err: any) => err.code === 'invalid_model' && /does not know/.test(err.message),
  )
  const known = Object.keys(
    (tf.serialization.SerializationMap.getMap() as unknown as { classNameMap: object }).classNameMap,
  ).filter((k) => /^[A-Z]/.test(k))
  assert.deepEqual([...TFJS_CLASS_NAMES].sort(), known.sort(), 'tfjs-classes.ts matches the installed TF.js')
})

test('labels are bounded: MAX_LABEL_CHARS, MAX_CLASSES, no NUL or lone surrogate', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'refit-labels-'))
  try {
    const check = async (name: string, content: string, code: string) => {
      const p = join(dir, name)
      await writeFile(p, content)
      await assert.rejects(
        validateDataset(p, { format: 'csv', limits: { maxClasses: 50 } }),
        (e: unknown) => e instanceof DatasetValidationError && e.code === code,
        name,
      )
    }
    await check('long.csv', `x,label\n1,${'a'.repeat(201)}\n2,b\n`, 'invalid_label')
    await check('nul.csv', 'x,label\n1,a\u0000\n2,b\n', 'invalid_csv') // the CSV reader refuses NUL lines first
    let many = 'x,label\n'
    for (let i = 0; i < 60; i++) many += `${i},c${i}\n`
    await check('many.csv', many, 'too_many_classes')
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('idempotent answers holding a secret are stored without it; their replay is 409 idempotent_replay_unavailable', async () => {
  for (const [url, headers, payload] of [
    [`/v1/admin/projects/${projectId}/api_keys`, adminAuth, { name: 'k' }],
    ['/v1/webhooks', auth, { url: 'http://127.0.0.1:9/hook' }],
  ] as const) {
    const h = { ...headers, 'idempotency-key': `secret-${url}` }
    const first = await app.inject({ method: 'POST', url, headers: h, payload })
    assert.equal(first.statusCode, 201, first.body)
    const secret = first.json().key ?? first.json().secret
    assert.ok(secret)
    const row = await app.db.idempotencyKey.findFirst({ where: { key: `secret-${url}` } })
    assert.ok(row && !JSON.stringify(row.responseBody).includes(secret), 'the stored answer holds no secret')
    const again = await app.inject({ method: 'POST', url, headers: h, payload })
    assert.equal(again.statusCode, 409, again.body)
    assert.equal(again.json().error.code, 'idempotent_replay_unavailable')
    assert.ok(!again.body.includes(secret))
  }
})

test('a multipart Idempotency-Key covers the fields and the file bytes', async () => {
  const upload = (content: string) => {
    const body = multipart({ purpose: 'fine-tune' }, { name: 'd.csv', content: Buffer.from(content) })
    return app.inject({
      method: 'POST',
      url: '/v1/files',
      headers: { ...auth, ...body.headers, 'idempotency-key': 'upload-1' },
      payload: body.payload,
    })
  }
  const first = await upload('x,label\n1,a\n2,b\n')
  assert.equal(first.statusCode, 201, first.body)
  const same = await upload('x,label\n1,a\n2,b\n')
  assert.equal(same.statusCode, 201, same.body)
  assert.equal(same.headers['idempotent-replayed'], 'true')
  assert.equal(same.json().id, first.json().id)
  const other = await upload('x,label\n1,a\n2,c\n')
  assert.equal(other.statusCode, 422, other.body)
  assert.equal(other.json().error.code, 'idempotency_key_reused')
})

test('GET /docs/json does not flood the log', async () => {
  let bytes = 0
  const stream = new Writable({
    write(c, _e, cb) {
      bytes += c.length
      cb()
    },
  })
  const a = await buildApp({ config: env.config, adminToken: ADMIN_TOKEN, logger: { level: 'info', stream } })
  await a.ready()
  try {
    bytes = 0
    const res = await a.inject({ method: 'GET', url: '/docs/json' })
    assert.equal(res.statusCode, 200)
    assert.ok(res.body.length > 100_000, 'the document is large')
    assert.ok(bytes < 5_000, `log bytes for one /docs/json: ${bytes}`)
  } finally {
    await a.close()
  }
})

test('the admin token is printed only by the start that generated it', async () => {
  const storage = await mkdtemp(join(tmpdir(), 'refit-token-'))
  const start = async (extra: Record<string, string> = {}) => {
    const port = await freePort()
    const { REFIT_ADMIN_TOKEN: _drop, ...base } = env.env
    const child = spawn(process.execPath, [join(projectRoot, 'dist/src/main.js')], {
      env: { ...process.env, ...base, STORAGE_DIR: storage, REFIT_ROLE: 'api', PORT: String(port), ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (out.includes('Admin token')) {
          clearInterval(t)
          resolve()
        }
        if (child.exitCode !== null) {
          clearInterval(t)
          reject(new Error(out))
        }
      }, 100)
    })
    const exited = new Promise((r) => child.once('exit', r))
    child.kill('SIGTERM')
    await exited
    return out
  }
  try {
    const first = await start()
    const token = (await readFile(join(storage, 'admin-token'), 'utf8')).trim()
    assert.ok(first.includes(token), 'the generating start prints it')
    const second = await start()
    assert.ok(!second.includes(token), 'a later start does not')
    assert.ok(second.includes(join(storage, 'admin-token')), 'it prints the path')
    const fromEnv = await start({ REFIT_ADMIN_TOKEN: 'env-token-0123456789abcdef' })
    assert.ok(!fromEnv.includes('env-token-0123456789abcdef') && !fromEnv.includes(token))
  } finally {
    await rm(storage, { recursive: true, force: true })
  }
})

test('list routes cut classes to the first 100 with class_count and classes_truncated; GET by id keeps them all', async () => {
  const classes = Array.from({ length: 150 }, (_, i) => `c${i}`)
  const id = `file-many${Date.now()}`
  await app.db.file.create({
    data: {
      id,
      projectId,
      filename: 'many.csv',
      purpose: 'fine-tune',
      format: 'csv',
      bytes: 1n,
      sha256: '0'.repeat(64),
      status: 'processed',
      stats: { rows: 150, feature_count: 1, classes, class_counts: classes.map(() => 1) },
    },
  })
  const list = (await app.inject({ method: 'GET', url: '/v1/files?limit=100', headers: auth })).json()
  const listed = list.data.find((f: any) => f.id === id)
  assert.equal(listed.stats.classes.length, 100)
  assert.equal(listed.stats.class_counts.length, 100)
  assert.equal(listed.stats.class_count, 150)
  assert.equal(listed.stats.classes_truncated, true)
  const admin = (
    await app.inject({ method: 'GET', url: `/v1/admin/files?project=${projectId}`, headers: adminAuth })
  ).json()
  assert.equal(admin.data.find((f: any) => f.id === id).stats.classes.length, 100)
  const one = (await app.inject({ method: 'GET', url: `/v1/files/${id}`, headers: auth })).json()
  assert.equal(one.stats.classes.length, 150)
  assert.equal(one.stats.classes_truncated, undefined)
})

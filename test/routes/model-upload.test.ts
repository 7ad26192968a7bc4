import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import * as tf from '@tensorflow/tfjs'
import type { FastifyInstance } from 'fastify'
import yauzl from 'yauzl'
import { ZipFile } from 'yazl'
import { inspectModelJson } from '../../src/modules/models/model-upload.js'
import { bearer, buildTestApp, createProjectKey, createTestEnv, multipart, type TestEnv } from '../helpers/env.js'

let env: TestEnv
let app: FastifyInstance
let owner: { projectId: string; key: string }
let other: { projectId: string; key: string }
/** Uploaded models that currently exist: their directories are the only ones allowed under models/. */
const live = new Set<string>()

let model: tf.LayersModel
let artifacts: tf.io.ModelArtifacts
const probe = [
  [0.1, -0.4, 2, 0.7],
  [-1, 0.5, 0.25, 3],
]

before(async () => {
  await tf.setBackend('cpu')
  env = await createTestEnv('model-upload')
  app = await buildTestApp(env.config)
  owner = await createProjectKey(app, 'owner')
  other = await createProjectKey(app, 'other')
  model = tf.sequential({
    layers: [
      tf.layers.dense({
        inputShape: [4],
        units: 8,
        activation: 'relu',
        name: 'hidden',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
        biasInitializer: tf.initializers.randomUniform({ seed: 3 }),
      }),
      tf.layers.dense({
        units: 3,
        activation: 'softmax',
        name: 'out',
        kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }),
      }),
    ],
  })
  await model.save(
    tf.io.withSaveHandler(async (a) => {
      artifacts = a
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) }
    }),
  )
})
after(async () => {
  model?.dispose()
  await app?.close()
  await env?.cleanup()
})

function zipOf(entries: Record<string, Buffer>, symlinks: string[] = []): Promise<Buffer> {
  const zip = new ZipFile()
  for (const [name, content] of Object.entries(entries)) zip.addBuffer(content, name)
  for (const name of symlinks) zip.addBuffer(Buffer.from('../../etc/passwd'), name, { mode: 0o120777 })
  zip.end()
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c))
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)))
    zip.outputStream.on('error', reject)
  })
}

const weightBytes = () => Buffer.from(artifacts.weightData as ArrayBuffer)

/**
 * The saved model as the TF.js converter lays it out: `folder/model.json` and two shards, split at byte 100
 * so that the stored weights.bin only loads when the shards are joined in manifest order.
 */
function modelEntries(
  opts: { folder?: string; paths?: string[]; shards?: Buffer[]; extra?: Record<string, Buffer> } = {},
): Record<string, Buffer> {
  const folder = opts.folder ?? 'tiny/'
  const w = weightBytes()
  const shards = opts.shards ?? [w.subarray(0, 100), w.subarray(100)]
  const names = shards.map((_, i) => `group1-shard${i + 1}of${shards.length}.bin`)
  const modelJson = {
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy,
    modelTopology: artifacts.modelTopology,
    weightsManifest: [{ paths: opts.paths ?? names, weights: artifacts.weightSpecs }],
  }
  const out: Record<string, Buffer> = { [`${folder}model.json`]: Buffer.from(JSON.stringify(modelJson)) }
  for (const [i, s] of shards.entries()) out[`${folder}${names[i]}`] = s
  return { ...out, ...opts.extra }
}

const goodFields = {
  input_shape: '[4]',
  preprocessing: '{"scale":0.5,"offset":-1}',
  classes: '["setosa","versicolor","virginica"]',
  feature_layer: 'hidden',
  description: 'a tiny iris classifier',
}

async function upload(fields: Record<string, string>, content: Buffer | null, key = owner.key) {
  const body = multipart(fields, content ? { name: 'model.zip', content } : undefined)
  return app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
}

function readZip(buf: Buffer): Promise<Map<string, Buffer>> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, zip) => {
      if (err) return reject(err)
      const out = new Map<string, Buffer>()
      zip.on('entry', (entry: yauzl.Entry) => {
        zip.openReadStream(entry, (e, stream) => {
          if (e) return reject(e)
          const chunks: Buffer[] = []
          stream.on('data', (c: Buffer) => chunks.push(c))
          stream.on('end', () => {
            out.set(entry.fileName, Buffer.concat(chunks))
            zip.readEntry()
          })
        })
      })
      zip.on('end', () => resolve(out))
      zip.on('error', reject)
      zip.readEntry()
    })
  })
}

async function assertNothingLeft() {
  const storage = env.config.storageDir
  assert.deepEqual((await readdir(join(storage, 'models'))).sort(), [...live].sort(), 'models/ holds only live models')
  assert.deepEqual(await readdir(join(storage, 'tmp')), [], 'tmp/ is empty')
  const rows = await app.db.model.findMany({ where: { kind: 'uploaded', deletedAt: null }, select: { id: true } })
  assert.deepEqual(rows.map((r) => r.id).sort(), [...live].sort(), 'no stray uploaded model rows')
  const artifacts = await app.db.artifact.count({ where: { kind: 'model' } })
  assert.equal(artifacts, await app.db.model.count({ where: { kind: 'uploaded' } }), 'one artifact per model row')
}

/** Asserts a 4xx with `code` and a detail whose `where` (entry or field) and message match. */
async function assertRefused(
  res: Awaited<ReturnType<typeof upload>>,
  status: number,
  code: string,
  where: { entry?: string; field?: string },
  message: RegExp,
) {
  assert.equal(res.statusCode, status, res.body)
  const err = res.json().error
  assert.equal(err.code, code, res.body)
  const detail = err.details?.[0]
  assert.ok(detail, `a detail in ${res.body}`)
  if (where.entry !== undefined) assert.equal(detail.entry, where.entry, res.body)
  if (where.field !== undefined) assert.equal(detail.field, where.field, res.body)
  assert.match(detail.message, message)
  await assertNothingLeft()
}

let uploadedId: string

test('uploads a sharded layers model: 201, kind uploaded, visible and downloadable', async () => {
  const res = await upload(goodFields, await zipOf(modelEntries()))
  assert.equal(res.statusCode, 201, res.body)
  const body = res.json()
  assert.match(body.id, /^model-[a-z0-9]{24}$/)
  uploadedId = body.id
  live.add(body.id)
  assert.equal(body.object, 'model')
  assert.equal(body.kind, 'uploaded')
  assert.equal(body.owned_by, owner.projectId)
  assert.equal(body.description, 'a tiny iris classifier')
  assert.deepEqual(body.input_shape, [4])
  assert.deepEqual(body.classes, ['setosa', 'versicolor', 'virginica'])
  assert.equal(body.feature_layer, 'hidden')
  assert.deepEqual(body.preprocessing, { scale: 0.5, offset: -1, resize: true, channels: 'as_model' })
  assert.equal(body.base_model, null)
  assert.ok(body.bytes > weightBytes().length)
  assert.match(body.sha256, /^[0-9a-f]{64}$/)

  const got = await app.inject({ url: `/v1/models/${body.id}`, headers: bearer(owner.key) })
  assert.equal(got.statusCode, 200)
  assert.deepEqual(got.json(), body)
  const list = await app.inject({ url: '/v1/models', headers: bearer(owner.key) })
  assert.ok(list.json().data.some((m: { id: string }) => m.id === body.id))
  await assertNothingLeft()

  const content = await app.inject({ url: `/v1/models/${body.id}/content`, headers: bearer(owner.key) })
  assert.equal(content.statusCode, 200)
  const files = await readZip(content.rawPayload)
  assert.deepEqual([...files.keys()].sort(), ['metadata.json', 'model.json', 'weights.bin'])
  const modelJson = JSON.parse(files.get('model.json')!.toString('utf8'))
  assert.deepEqual(modelJson.weightsManifest[0].paths, ['./weights.bin'])
  assert.equal(modelJson.weightsManifest.length, 1)
  assert.deepEqual(files.get('weights.bin'), weightBytes())
  const metadata = JSON.parse(files.get('metadata.json')!.toString('utf8'))
  assert.deepEqual(metadata, {
    input_shape: [4],
    preprocessing: { scale: 0.5, offset: -1, resize: true, channels: 'as_model' },
    classes: ['setosa', 'versicolor', 'virginica'],
    feature_layer: 'hidden',
    description: 'a tiny iris classifier',
  })

  const weights = files.get('weights.bin')!
  const loaded = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: modelJson.modelTopology,
      weightSpecs: modelJson.weightsManifest[0].weights,
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer,
    }),
  )
  const x = tf.tensor2d(probe)
  const expected = model.predict(x) as tf.Tensor
  const actual = loaded.predict(x) as tf.Tensor
  assert.deepEqual(Array.from(actual.dataSync()), Array.from(expected.dataSync()))
  tf.dispose([x, expected, actual])
  loaded.dispose()
})

test('a model.json at the zip root with one shard and no optional fields gets the defaults', async () => {
  const res = await upload({ input_shape: '[4]' }, await zipOf(modelEntries({ folder: '', shards: [weightBytes()] })))
  assert.equal(res.statusCode, 201, res.body)
  const body = res.json()
  live.add(body.id)
  assert.deepEqual(body.preprocessing, { scale: 1, offset: 0, resize: true, channels: 'as_model' })
  assert.equal(body.classes, null)
  assert.equal(body.feature_layer, null)
  assert.equal(body.description, null)
  await assertNothingLeft()
})

test('another project cannot see, download or delete the model', async () => {
  for (const [method, url] of [
    ['GET', `/v1/models/${uploadedId}`],
    ['GET', `/v1/models/${uploadedId}/content`],
    ['DELETE', `/v1/models/${uploadedId}`],
  ] as const) {
    const res = await app.inject({ method, url, headers: bearer(other.key) })
    assert.equal(res.statusCode, 404, `${method} ${url}`)
    assert.equal(res.json().error.code, 'not_found')
  }
  const list = await app.inject({ url: '/v1/models', headers: bearer(other.key) })
  assert.ok(!list.json().data.some((m: { id: string }) => m.id === uploadedId))
})

test('refuses a zip without model.json', async () => {
  const entries = modelEntries()
  delete entries['tiny/model.json']
  await assertRefused(
    await upload(goodFields, await zipOf(entries)),
    400,
    'invalid_model',
    { entry: 'model.json' },
    /found none/,
  )
})

test('refuses weights shorter than the manifest says', async () => {
  const w = weightBytes()
  const res = await upload(
    goodFields,
    await zipOf(modelEntries({ shards: [w.subarray(0, 100), w.subarray(100, w.length - 4)] })),
  )
  await assertRefused(res, 400, 'invalid_model', {}, new RegExp(`expected ${w.length} bytes .*found ${w.length - 4}`))
})

test('refuses a manifest path that leaves the model folder', async () => {
  const w = weightBytes()
  const entries = modelEntries({ paths: ['../x.bin'], shards: [w], extra: { 'x.bin': w } })
  await assertRefused(
    await upload(goodFields, await zipOf(entries)),
    400,
    'invalid_model',
    { entry: '../x.bin' },
    /inside the folder tiny\//,
  )
})

test('refuses a manifest path missing from the zip', async () => {
  const entries = modelEntries({ paths: ['group1-shard1of2.bin', 'nope.bin'] })
  await assertRefused(
    await upload(goodFields, await zipOf(entries)),
    400,
    'invalid_model',
    { entry: 'tiny/nope.bin' },
    /no such entry/,
  )
})

test('refuses symlink entries', async () => {
  const zip = await zipOf(modelEntries(), ['tiny/link.bin'])
  await assertRefused(await upload(goodFields, zip), 400, 'invalid_model', { entry: 'tiny/link.bin' }, /symbolic link/)
})

test('refuses a model.json that says graph-model without a GraphDef, or names an unknown format', async () => {
  // graph models themselves are accepted as frozen backbones: test/e2e/graph-model-base.test.ts
  const entries = modelEntries()
  const json = JSON.parse(entries['tiny/model.json'].toString())
  entries['tiny/model.json'] = Buffer.from(JSON.stringify({ ...json, format: 'graph-model' }))
  await assertRefused(
    await upload(goodFields, await zipOf(entries)),
    400,
    'invalid_model',
    { entry: 'tiny/model.json' },
    /GraphDef/,
  )
  entries['tiny/model.json'] = Buffer.from(JSON.stringify({ ...json, format: 'saved-model' }))
  await assertRefused(
    await upload(goodFields, await zipOf(entries)),
    400,
    'invalid_model',
    { entry: 'tiny/model.json' },
    /layers-model.*graph-model/,
  )
})

test('refuses an input_shape that differs from the input layer', async () => {
  const res = await upload({ ...goodFields, input_shape: '[5]' }, await zipOf(modelEntries()))
  await assertRefused(res, 400, 'invalid_field', { field: 'input_shape' }, /expected \[4\].*found \[5\]/)
  assert.equal(res.json().error.param, 'input_shape')
})

test('refuses an input_shape that is not a JSON array of positive integers', async () => {
  const res = await upload({ ...goodFields, input_shape: '[4, 0]' }, await zipOf(modelEntries()))
  await assertRefused(res, 400, 'invalid_field', { field: 'input_shape' }, /positive integers/)
})

test('refuses classes whose length differs from the output units', async () => {
  const res = await upload({ ...goodFields, classes: '["a","b"]' }, await zipOf(modelEntries()))
  await assertRefused(
    res,
    400,
    'invalid_field',
    { field: 'classes' },
    /expected 3 class names .*"out".*found "2 class names"/,
  )
})

test('refuses an unknown feature_layer', async () => {
  const res = await upload({ ...goodFields, feature_layer: 'nope' }, await zipOf(modelEntries()))
  await assertRefused(res, 400, 'invalid_field', { field: 'feature_layer' }, /one of hidden, out.*found "nope"/)
})

test('refuses a file that is not a zip', async () => {
  const res = await upload(goodFields, Buffer.from('model.json is not here, this is plain text\n'))
  await assertRefused(res, 400, 'invalid_model', { field: 'file' }, /expected a zip archive/)
})

test('refuses a zip of more than 1000 entries', async () => {
  const entries = modelEntries()
  for (let i = 0; i < 1000; i++) entries[`tiny/extra/${i}.txt`] = Buffer.from('x')
  const res = await upload(goodFields, await zipOf(entries))
  await assertRefused(res, 400, 'invalid_model', { field: 'file' }, /at most 1000 entries, found 1003/)
})

test('quantized weights are counted at their quantization dtype size', () => {
  const json = (dtype: string) =>
    JSON.stringify({
      format: 'layers-model',
      modelTopology: artifacts.modelTopology,
      weightsManifest: [
        {
          paths: ['w.bin'],
          weights: (artifacts.weightSpecs ?? []).map((w) => ({ ...w, quantization: { dtype, scale: 0.1, min: -1 } })),
        },
      ],
    })
  // 4x8 + 8 + 8x3 + 3 = 67 values
  const ok = inspectModelJson('model.json', json('uint8'), new Map([['w.bin', { uncompressedSize: 67 }]]))
  assert.equal(ok.weightBytes, 67)
  assert.equal(
    inspectModelJson('model.json', json('float16'), new Map([['w.bin', { uncompressedSize: 134 }]])).weightBytes,
    134,
  )
  assert.throws(
    () => inspectModelJson('model.json', json('uint16'), new Map([['w.bin', { uncompressedSize: 67 }]])),
    (e: any) => e.code === 'invalid_model' && /expected 134 bytes/.test(e.details[0].message),
  )
})

test('refuses a body without a file part', async () => {
  const res = await upload(goodFields, null)
  assert.equal(res.statusCode, 400)
  assert.equal(res.json().error.code, 'missing_file')
  await assertNothingLeft()
})

test('DELETE removes the uploaded model and its files', async () => {
  const res = await app.inject({ method: 'DELETE', url: `/v1/models/${uploadedId}`, headers: bearer(owner.key) })
  assert.equal(res.statusCode, 200, res.body)
  assert.deepEqual(res.json(), { id: uploadedId, object: 'model', deleted: true })
  live.delete(uploadedId)
  assert.deepEqual(await readdir(join(env.config.storageDir, 'models')), [...live])
  const got = await app.inject({ url: `/v1/models/${uploadedId}`, headers: bearer(owner.key) })
  assert.equal(got.statusCode, 404)
})

test('the route is documented', async () => {
  const doc = app.swagger() as any
  const op = doc.paths['/v1/models'].post
  assert.equal(op.operationId, 'uploadModel')
  assert.deepEqual(op.tags, ['models'])
  assert.ok(op.requestBody.content['multipart/form-data'].schema.properties.input_shape)
  assert.ok(op.responses['201'] && op.responses['413'] && op.responses['415'])
})

// A TF.js graph model as an uploaded frozen backbone (issue 16 item 2): nsfwjs's mobilenet_v2_mid (made by
// tensorflowjs_converter, uint8-quantized, with TF.js's fused ops) uploads through POST /v1/models; a wrong
// input_shape, an unknown feature node and an op without a TensorFlow rewrite are refused naming what is at
// fault; methods it cannot serve are 400 model_not_trainable; a transfer job on PNG digits trains a head on
// its features through the graph path (a real worker process).
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { ZipFile } from 'yazl'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { nsfwModelFiles } from '../../src/engine/builtin-models.js'
import {
  bearer,
  buildTestApp,
  createProjectKey,
  createTestEnv,
  multipart,
  type TestEnv,
  waitFor,
} from '../helpers/env.js'
import { waitForTerminal } from '../helpers/jobs.js'
import { startWorkerProcess } from '../helpers/worker-process.js'

let env: TestEnv
let app: FastifyInstance
let key: string
let work: string
const { modelJson, weights } = nsfwModelFiles('mobilenet_v2_mid')

before(async () => {
  env = await createTestEnv('graph_model_base')
  app = await buildTestApp(env.config)
  ;({ key } = await createProjectKey(app))
  work = await mkdtemp(join(tmpdir(), 'refit-graph-base-'))
})

after(async () => {
  await app?.close()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

/** The graph model as tensorflowjs_converter lays it out: `mobilenet/model.json` and its two weight shards. */
function graphZip(json: typeof modelJson = modelJson): Promise<Buffer> {
  const zip = new ZipFile()
  const paths = json.weightsManifest[0].paths as string[]
  // any split works: the stored weights.bin is the shards' concatenation in manifest order
  const first = Math.floor(weights.byteLength / 2)
  zip.addBuffer(Buffer.from(JSON.stringify(json)), 'mobilenet/model.json')
  zip.addBuffer(weights.subarray(0, first), `mobilenet/${paths[0]}`)
  zip.addBuffer(weights.subarray(first), `mobilenet/${paths[1]}`)
  zip.end()
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    zip.outputStream.on('data', (c: Buffer) => chunks.push(c))
    zip.outputStream.on('end', () => resolve(Buffer.concat(chunks)))
    zip.outputStream.on('error', reject)
  })
}
async function upload(fields: Record<string, string>, content: Buffer) {
  const body = multipart(fields, { name: 'model.zip', content })
  return app.inject({
    method: 'POST',
    url: '/v1/models',
    headers: { ...bearer(key), ...body.headers },
    payload: body.payload,
  })
}

const PREP = { input_shape: '[224,224,3]', preprocessing: JSON.stringify({ scale: 1 / 255, offset: 0 }) }

test('a TF.js graph model uploads as a frozen backbone; wrong input_shape, unknown node and unmappable op refused', async () => {
  const zip = await graphZip()
  const wrongShape = await upload({ ...PREP, input_shape: '[28,28,1]' }, zip)
  assert.equal(wrongShape.statusCode, 400, wrongShape.body)
  assert.equal(wrongShape.json().error.code, 'invalid_field')
  assert.equal(wrongShape.json().error.param, 'input_shape')
  // names both shapes and the Placeholder
  assert.match(wrongShape.json().error.message, /\[28,28,1\].*Placeholder "input" \[224,224,3\]/)

  const unknown = await upload({ ...PREP, feature_layer: 'no/such/node' }, zip)
  assert.equal(unknown.statusCode, 400, unknown.body)
  assert.equal(unknown.json().error.code, 'graph_model_feature_node_not_found')
  assert.equal(unknown.json().error.param, 'feature_layer')
  assert.match(unknown.json().error.message, /no\/such\/node/)
  assert.match(unknown.json().error.details[0].message, /feature_vector\/SpatialSqueeze/)

  const bent = structuredClone(modelJson)
  const victim = bent.modelTopology.node.find((n: { op: string }) => n.op === 'FusedDepthwiseConv2dNative')
  victim.attr.fused_ops = { list: { s: ['BiasAdd', 'Prelu'].map((s) => Buffer.from(s).toString('base64')) } }
  victim.attr.num_args = { i: '2' }
  const unmappable = await upload(PREP, await graphZip(bent))
  assert.equal(unmappable.statusCode, 400, unmappable.body)
  assert.equal(unmappable.json().error.code, 'graph_model_op_unsupported')
  assert.ok(unmappable.json().error.message.includes(`"${victim.name}" (op FusedDepthwiseConv2dNative)`))
  // nothing stayed behind from the refusals
  assert.equal(await app.db.model.count({ where: { kind: 'uploaded' } }), 0)

  const ok = await upload({ ...PREP, description: 'nsfwjs mobilenet_v2_mid' }, zip)
  assert.equal(ok.statusCode, 201, ok.body)
  const row = await app.db.model.findUniqueOrThrow({ where: { id: ok.json().id } })
  assert.equal(row.kind, 'uploaded')
  const meta = row.metadata as Record<string, any>
  assert.deepEqual(meta.graph_model, {
    format: 'tfjs-graph-model',
    input: 'input',
    output: 'Identity',
    feature_node: meta.feature_layer,
  })
  assert.match(meta.feature_layer, /feature_vector\/SpatialSqueeze$/)
})

test('a transfer job on the graph model trains a head on its graph features; other methods are refused', async () => {
  const model = await app.db.model.findFirstOrThrow({ where: { kind: 'uploaded' } })
  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7], format: 'image_zip', limit: 36, out })
  const body = multipart({ purpose: 'fine-tune' }, { name: 'digits.zip', content: await readFile(out) })
  const worker = await startWorkerProcess(env.env)
  try {
    const up = await app.inject({
      method: 'POST',
      url: '/v1/files',
      headers: { ...bearer(key), ...body.headers },
      payload: body.payload,
    })
    assert.equal(up.statusCode, 201, up.body)
    const fileId = up.json().id as string
    await waitFor(
      async () => (await app.db.file.findUnique({ where: { id: fileId } }))?.status === 'processed',
      60_000,
      'file validation',
    )
    const create = (method: Record<string, unknown>) =>
      app.inject({
        method: 'POST',
        url: '/v1/fine_tuning/jobs',
        headers: bearer(key),
        payload: { model: model.id, training_file: fileId, seed: 3, method },
      })
    const unfreeze = await create({ type: 'transfer', transfer: { unfreeze_top_blocks: 1 } })
    assert.equal(unfreeze.statusCode, 400, unfreeze.body)
    assert.equal(unfreeze.json().error.code, 'model_not_trainable')
    assert.equal(unfreeze.json().error.param, 'method.transfer.unfreeze_top_blocks')
    const supervised = await create({ type: 'supervised' })
    assert.equal(supervised.json().error.code, 'model_not_trainable')
    const teacher = await create({
      type: 'distillation',
      distillation: { teacher_model: model.id },
    })
    assert.equal(teacher.statusCode, 400, teacher.body)
    assert.equal(teacher.json().error.code, 'model_not_trainable')

    const res = await create({ type: 'transfer', transfer: { hyperparameters: { n_epochs: 1, batch_size: 12 } } })
    assert.equal(res.statusCode, 200, res.body)
    const job = await waitForTerminal(app, res.json().id, 300_000)
    assert.equal(job.status, 'succeeded', `${job.errorCode}: ${job.errorMessage}\n${worker.output().slice(-2000)}`)
    const events = await app.db.jobEvent.findMany({ where: { jobId: job.id }, orderBy: { seq: 'asc' } })
    const computed = events.find((e) => e.message.startsWith('computed backbone features'))
    assert.ok(computed, events.map((e) => e.message).join('\n'))
    const data = computed.data as Record<string, unknown>
    assert.equal(data.forward, 'graph')
    assert.equal(data.samples, 36)
    assert.equal(data.feature_dim, 1792)
    const tuned = await app.db.model.findUniqueOrThrow({ where: { id: job.fineTunedModelId! } })
    const meta = tuned.metadata as Record<string, any>
    assert.deepEqual(meta.classes, ['5', '6', '7'])
    assert.equal(meta.graph_base.feature_node, (model.metadata as Record<string, any>).feature_layer)
    // predictions through graph bases are not served yet: refused clearly rather than failing in a worker
    const pred = await app.inject({
      method: 'POST',
      url: `/v1/models/${tuned.id}/predictions`,
      headers: bearer(key),
      payload: { inputs: [[0]] },
    })
    assert.equal(pred.statusCode, 400, pred.body)
    assert.equal(pred.json().error.code, 'model_not_predictable')
  } finally {
    await worker.kill('SIGTERM')
  }
})

import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { BUILTIN_MODELS, ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel, readMetadata } from '../../src/engine/model-io.js'
import { toInputTensor } from '../../src/engine/preprocess.js'
import type { Tf } from '../../src/engine/tf.js'

let tf: Tf
let modelsDir: string
before(async () => {
  ;({ tf } = await selectBackend('tensorflow'))
  modelsDir = await mkdtemp(path.join(tmpdir(), 'refit-builtin-'))
})
after(() => rm(modelsDir, { recursive: true, force: true }))

test('mnist-cnn: committed model classifies digits 0-4 of the test split', async () => {
  const dir = await ensureBuiltinModelDir('mnist-cnn', modelsDir)
  const meta = await readMetadata(dir)
  assert.equal(meta.feature_layer, 'flatten')
  const model = await loadModel(tf, dir)
  assert.equal(model.getLayer('flatten').outputShape[1], 4608)
  const ds = loadMnist('test', [0, 1, 2, 3, 4], 1000)
  const acc = tf.tidy(() => {
    const pred = (model.predict(toInputTensor(tf, ds, meta.preprocessing, meta.input_shape)) as any).argMax(-1)
    return pred.equal(tf.tensor1d(ds.y, 'int32')).mean().dataSync()[0]
  })
  assert.ok(acc >= 0.98, `accuracy ${acc}`)
  model.dispose()
})

test('mobilenet-v2: materialized from nsfwjs, feature layer is 1280-d, idempotent', async () => {
  const dir = await ensureBuiltinModelDir('mobilenet-v2', modelsDir)
  const before = (await stat(path.join(dir, 'weights.bin'))).mtimeMs
  assert.equal(await ensureBuiltinModelDir('mobilenet-v2', modelsDir), dir)
  assert.equal((await stat(path.join(dir, 'weights.bin'))).mtimeMs, before)
  // no temp directory left behind by the atomic write
  assert.ok((await readdir(modelsDir)).every((d) => !d.includes('.tmp-')))
  const meta = await readMetadata(dir)
  const listed = BUILTIN_MODELS.find((m) => m.id === 'mobilenet-v2')!
  assert.deepEqual(meta.classes, listed.metadata.classes)
  const model = await loadModel(tf, dir)
  assert.deepEqual(model.inputs[0].shape, [null, 224, 224, 3])
  assert.deepEqual(model.getLayer(meta.feature_layer!).outputShape, [null, 1280])
  assert.deepEqual(model.outputs[0].shape, [null, 5])
  const p = tf.tidy(() => (model.predict(tf.fill([1, 224, 224, 3], 0.5)) as any).sum().dataSync()[0])
  assert.ok(Math.abs(p - 1) < 1e-4)
  model.dispose()
})

// Whole transfer models composed from files (a job served from the feature cache never loads its backbone)
// must be the model runTransfer builds in TensorFlow.js: same predictions, for a functional base with
// uint8-quantized weights (mobilenet-v2) and a Sequential one cut below its flatten layer (mnist-cnn).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { type BuiltinModelId, ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { loadModel, loadModelForTraining, saveModel } from '../../src/engine/model-io.js'
import type { Tf } from '../../src/engine/tf.js'
import { buildHead, composeWholeModel, cutBackbone } from '../../src/engine/transfer-model.js'
import { wholeModelComposer } from '../../src/engine/whole-model-files.js'

let tf: Tf
let work: string

before(async () => {
  tf = (await selectBackend('auto')).tf
  work = await mkdtemp(join(tmpdir(), 'refit-compose-'))
})

after(async () => {
  if (work) await rm(work, { recursive: true, force: true })
})

async function check(id: BuiltinModelId, featureLayer: string) {
  const baseDir = await ensureBuiltinModelDir(id, join(work, 'models'))
  const base = await loadModelForTraining(tf, baseDir)
  const { backbone, features } = cutBackbone(tf, base, featureLayer)
  const shape = backbone.outputs[0].shape.slice(1) as number[]
  const dim = shape.reduce((a, b) => a * b, 1)
  const head = buildHead(tf, base, dim, 3, 11, { hidden_units: 16, dropout: 0.5 })
  const whole = composeWholeModel(tf, base, features, head)
  const viaTf = join(work, `${id}-tf`)
  const viaFiles = join(work, `${id}-files`)
  await saveModel(tf, whole, viaTf)
  await saveModel(tf, head.model, viaFiles)
  await (await wholeModelComposer(baseDir, featureLayer, shape)).writeInto(viaFiles)

  const [a, b] = [await loadModel(tf, viaTf), await loadModel(tf, viaFiles)]
  assert.deepEqual(b.inputs[0].shape, a.inputs[0].shape)
  assert.equal(b.countParams(), a.countParams())
  const inputShape = a.inputs[0].shape.slice(1) as number[]
  const x = tf.randomUniform([4, ...inputShape], 0, 1, 'float32', 5)
  const [pa, pb] = [a.predict(x) as ReturnType<Tf['tensor']>, b.predict(x) as ReturnType<Tf['tensor']>]
  const diff = tf.max(tf.abs(tf.sub(pa, pb))).dataSync()[0]
  assert.ok(diff <= 1e-6, `${id}: composed and TF-built models differ by ${diff}`)
  tf.dispose([x, pa, pb])
  for (const m of [a, b, whole, head.model, base]) {
    try {
      m.dispose()
    } catch {
      // shared layers already freed
    }
  }
}

test('mobilenet-v2 (functional, quantized weights) cut at flatten_1: composed files == composeWholeModel', async () => {
  await check('mobilenet-v2', 'flatten_1')
})

test('mnist-cnn (Sequential) cut at pool1, a Flatten before the head: composed files == composeWholeModel', async () => {
  await check('mnist-cnn', 'pool1')
})

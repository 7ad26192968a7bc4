import assert from 'node:assert/strict'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { loadDataset } from '../../src/datasets/load.js'
import { selectBackend } from '../../src/engine/backend.js'
import { BUILTIN_MODELS, ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel, readMetadata } from '../../src/engine/model-io.js'
import { toInputTensor } from '../../src/engine/preprocess.js'
import type { ChildMessage } from '../../src/engine/protocol.js'
import type { Tf } from '../../src/engine/tf.js'
import { runTransfer } from '../../src/engine/transfer.js'

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

test('inception-v3: materialized from nsfwjs, 2048-d at flatten_1, blocks name its layers; transfers on the graph path', async () => {
  const dir = await ensureBuiltinModelDir('inception-v3', modelsDir)
  const meta = await readMetadata(dir)
  assert.equal(meta.source, 'nsfwjs@4.4 dist/models/inception_v3')
  assert.match(meta.description!, /InceptionV3 .*nsfwjs/)
  const model = await loadModel(tf, dir)
  assert.deepEqual(model.inputs[0].shape, [null, 299, 299, 3])
  assert.deepEqual(model.getLayer(meta.feature_layer!).outputShape, [null, 2048])
  assert.deepEqual(model.outputs[0].shape, [null, 5])
  // the 11 blocks hold every Conv2D and BatchNormalization above the 5-conv stem, each once
  const blockLayers = meta.blocks!.flatMap((b) => b.layers)
  assert.equal(meta.blocks!.length, 11)
  assert.equal(new Set(blockLayers).size, blockLayers.length)
  const weighted = model.layers.filter((l) => ['Conv2D', 'BatchNormalization'].includes(l.getClassName()))
  assert.deepEqual(
    weighted
      .map((l) => l.name)
      .filter((n) => !blockLayers.includes(n))
      .sort(),
    [1, 2, 3, 4, 5].flatMap((i) => [`batch_normalization_${i}`, `conv2d_${i}`]).sort(),
  )
  model.dispose()

  // a few real PNG digits (0 vs 1), resized to 299x299 RGB by the datasets module as a job's file would be
  const zip = path.join(modelsDir, 'digits-0-1.zip')
  await makeMnistDataset({ split: 'train', digits: [0, 1], format: 'image_zip', limit: 32, out: zip })
  const train = await loadDataset(zip, 'image_zip', { imageShape: [299, 299, 3] })
  const messages: ChildMessage[] = []
  const result = await runTransfer({
    tf,
    backend: 'tensorflow',
    baseModelDir: dir,
    baseModelId: 'inception-v3',
    train,
    hyperparameters: { n_epochs: 8, batch_size: 8, learning_rate: 1e-3, validation_split: 0.25 },
    seed: 3,
    outputDir: path.join(modelsDir, 'inception-job'),
    emit: (m) => messages.push(m),
    isCancelled: () => false,
  })
  const events = messages.filter((m) => m.type === 'event') as Extract<ChildMessage, { type: 'event' }>[]
  const backbone = events.find((e) => /backbone forward pass/.test(e.message))
  assert.match(backbone?.message ?? '', /backbone forward pass: graph/, JSON.stringify(backbone))
  const features = events.find((e) => /computed backbone features/.test(e.message))
  // still graph after the first batch's check against eager (a mismatch would have switched it to eager)
  assert.match(features?.message ?? '', /\(graph\)$/)
  assert.equal(features?.data?.feature_dim, 2048)
  assert.equal(features?.data?.computed, 32)
  const ev = result.evaluation!
  assert.equal(ev.samples, 8)
  assert.ok(ev.accuracy >= 0.75, `validation accuracy ${ev.accuracy} on 0 vs 1`)
  const out = await readMetadata(result.modelDir!)
  assert.deepEqual(out.classes, ['0', '1'])
  assert.equal(out.base_model, 'inception-v3')
  console.log(
    `inception-v3 transfer: ${features?.data?.ms} ms for 32 images' features (graph vs eager on the first rows: ${features?.data?.graph_check_max_diff}), validation accuracy ${ev.accuracy}`,
  )
})

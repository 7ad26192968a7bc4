import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel, readMetadata } from '../../src/engine/model-io.js'
import { toInputTensor } from '../../src/engine/preprocess.js'
import type { ChildMessage } from '../../src/engine/protocol.js'
import type { Tf } from '../../src/engine/tf.js'
import { runTransfer } from '../../src/engine/transfer.js'

let tf: Tf
let work: string
const baseDir = builtinModelSourceDir('mnist-cnn')

before(async () => {
  ;({ tf } = await selectBackend('tensorflow'))
  work = await mkdtemp(path.join(tmpdir(), 'refit-transfer-'))
})
after(async () => {
  await rm(work, { recursive: true, force: true })
})

/** name -> bytes of each weight in a model directory */
async function weightBytes(dir: string): Promise<Map<string, Buffer>> {
  const mj = JSON.parse(await readFile(path.join(dir, 'model.json'), 'utf8'))
  const bin = await readFile(path.join(dir, 'weights.bin'))
  const out = new Map<string, Buffer>()
  let offset = 0
  for (const w of mj.weightsManifest[0].weights) {
    const size = (w.shape as number[]).reduce((a, b) => a * b, 1) * 4
    out.set(w.name, bin.subarray(offset, offset + size))
    offset += size
  }
  return out
}

test('transfer on digits 5-9: accuracy, frozen backbone byte-identical, no tensor leak', async () => {
  const digits = [5, 6, 7, 8, 9]
  const train = loadMnist('train', digits, 2000)
  const messages: ChildMessage[] = []
  const tensorsAtEpochEnd: number[] = []
  const outputDir = path.join(work, 'job1')
  const result = await runTransfer({
    tf,
    baseModelDir: baseDir,
    baseModelId: 'mnist-cnn',
    train,
    hyperparameters: { n_epochs: 3, batch_size: 32, learning_rate: 1e-3, validation_split: 0.2 },
    seed: 7,
    outputDir,
    emit: (m) => messages.push(m),
    isCancelled: () => false,
    onEpochEnd: () => tensorsAtEpochEnd.push(tf.memory().numTensors),
  })
  assert.equal(result.cancelled, false)
  assert.ok(result.modelDir)
  const ev = result.evaluation!
  assert.equal(ev.samples, 400)
  assert.ok(ev.accuracy >= 0.93, `validation accuracy ${ev.accuracy}`)
  assert.deepEqual(
    ev.per_class.map((c) => c.class),
    ['5', '6', '7', '8', '9'],
  )
  assert.equal(
    ev.confusion_matrix.flat().reduce((a, b) => a + b, 0),
    400,
  )
  assert.equal(tensorsAtEpochEnd.length, 3)
  assert.equal(new Set(tensorsAtEpochEnd).size, 1, `tensors per epoch ${tensorsAtEpochEnd}`)

  const kinds = messages.map((m) => m.type)
  assert.equal(kinds[0], 'event')
  assert.deepEqual(
    kinds.filter((k) => k === 'epoch' || k === 'checkpoint'),
    ['epoch', 'checkpoint', 'epoch', 'checkpoint', 'epoch', 'checkpoint'],
  )
  const epochs = messages.filter((m) => m.type === 'epoch')
  for (const e of epochs) assert.ok(e.metrics.val_accuracy !== undefined && e.metrics.val_loss !== undefined)
  assert.deepEqual((await readdir(path.join(outputDir, 'checkpoints'))).sort(), ['epoch-1', 'epoch-2', 'epoch-3'])
  assert.ok((await readdir(path.join(outputDir, 'checkpoints', 'epoch-3'))).includes('optimizer.bin'))

  // frozen backbone: the saved model holds the base's conv weights byte for byte
  const baseWeights = await weightBytes(baseDir)
  const savedWeights = await weightBytes(result.modelDir)
  for (const name of ['conv1/kernel', 'conv1/bias', 'conv2/kernel', 'conv2/bias']) {
    assert.ok(savedWeights.get(name)?.equals(baseWeights.get(name)!), `${name} differs`)
  }
  assert.ok(!savedWeights.has('dense1/kernel'), 'old head must not be in the new model')

  // the whole model takes raw (preprocessed) 28x28x1 input and reproduces the validation accuracy on test data
  const meta = await readMetadata(result.modelDir)
  assert.deepEqual(meta.classes, ['5', '6', '7', '8', '9'])
  assert.equal(meta.feature_layer, 'flatten')
  assert.equal(meta.base_model, 'mnist-cnn')
  const model = await loadModel(tf, result.modelDir)
  // stock loader (tfjs-node file://) reads the same directory
  const stock = await (tf as any).loadLayersModel(`file://${result.modelDir}/model.json`)
  assert.equal(stock.layers.length, model.layers.length)
  stock.dispose()
  const test = loadMnist('test', digits, 500)
  const acc = tf.tidy(() => {
    const x = toInputTensor(tf, test, meta.preprocessing, meta.input_shape)
    const pred = (model.predict(x) as ReturnType<Tf['tensor']>).argMax(-1)
    return pred.equal(tf.tensor1d(test.y, 'int32')).mean().dataSync()[0]
  })
  model.dispose()
  console.log(`transfer 5-9: validation accuracy ${ev.accuracy.toFixed(4)}, test accuracy ${acc.toFixed(4)}`)
  assert.ok(acc >= 0.93, `test accuracy of the saved whole model ${acc}`)
})

test('cancel stops at the end of the current batch', async () => {
  const train = loadMnist('train', [5, 6, 7, 8, 9], 600)
  // isCancelled is asked before each of the 3 feature batches (600 / 256), then after each training batch
  let asked = 0
  const cancelAfterTrainingBatches = 2
  const result = await runTransfer({
    tf,
    baseModelDir: baseDir,
    train,
    hyperparameters: { n_epochs: 2, batch_size: 16, learning_rate: 1e-3, validation_split: 0.1 },
    seed: 1,
    outputDir: path.join(work, 'job2'),
    emit: () => {},
    isCancelled: () => ++asked > 3 + cancelAfterTrainingBatches - 1,
  })
  assert.equal(result.cancelled, true)
  assert.equal(result.modelDir, null)
  assert.equal(result.trainedSamples, 16 * cancelAfterTrainingBatches)
  assert.ok(!existsSync(path.join(work, 'job2', 'checkpoints')))
})

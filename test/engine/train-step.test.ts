// The compiled training step (src/engine/graph/train-step.ts) against the eager step it replaces: same losses
// and same weights after several steps from the same weights, batches and dropout masks, per preset and
// optimizer; distillation's loss; optimizer state that moves between the two paths (checkpoints); and the
// models and settings that keep training eager, with the reason in the job's events.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, test } from 'node:test'
import { findArchitecture } from '../../src/engine/architectures.js'
import { selectBackend } from '../../src/engine/backend.js'
import { withDropout } from '../../src/engine/dropout.js'
import { compileTrainStep, GraphTrainStep, planTrainChain } from '../../src/engine/graph/train-step.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import type { ArchitectureId, ChildMessage, OptimizerName } from '../../src/engine/protocol.js'
import { Rng } from '../../src/engine/random.js'
import { runSupervised } from '../../src/engine/supervised.js'
import type { LayersModel, Tensor } from '../../src/engine/tf.js'
import {
  crossEntropy,
  distillationLoss,
  logitsFn,
  makeOptimizer,
  trainableVariables,
} from '../../src/engine/training.js'

const { tf } = await selectBackend('tensorflow')
const work = await mkdtemp(path.join(tmpdir(), 'refit-train-step-test-'))
after(() => rm(work, { recursive: true, force: true }))

const mnist = loadMnist('train', [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 96)
const K = 10

function batch(arch: ArchitectureId, from: number, rows: number) {
  const shape = arch.startsWith('mlp') ? [784] : [28, 28, 1]
  const x = tf.tidy(() =>
    tf.div(tf.tensor(mnist.x.slice(from * 784, (from + rows) * 784) as Uint8Array, [rows, ...shape], 'float32'), 255),
  )
  const labels = tf.tensor1d(Int32Array.from(mnist.y.slice(from, from + rows)), 'int32')
  const oneHot = tf.tidy(() => tf.cast(tf.oneHot(labels, K), 'float32'))
  return { x, labels, oneHot, dispose: () => tf.dispose([x, labels, oneHot]) }
}

function build(arch: ArchitectureId): LayersModel {
  return findArchitecture(arch)!.build(tf, arch.startsWith('mlp') ? [784] : [28, 28, 1], K, 11)
}

function maxWeightDiff(a: LayersModel, b: LayersModel): number {
  let d = 0
  a.weights.forEach((w, i) => {
    const x = w.read().dataSync()
    const y = b.weights[i].read().dataSync()
    for (let j = 0; j < x.length; j++) d = Math.max(d, Math.abs(x[j] - y[j]))
  })
  return d
}

/** Eager step exactly as the engine's loop takes it (training.ts runEpochs). */
function eagerStep(
  model: LayersModel,
  opt: ReturnType<typeof makeOptimizer>,
  x: Tensor,
  labels: Tensor,
  rng: Rng,
  teacher?: { probs: Tensor; temperature: number; alpha: number },
): number {
  const forward = logitsFn(tf, model)
  const cost = opt.minimize(
    () => {
      const logits = withDropout(rng, () => forward(x))
      const y = tf.oneHot(labels, K)
      return teacher
        ? distillationLoss(tf, logits, y, teacher.probs, teacher.temperature, teacher.alpha)
        : crossEntropy(tf, logits, y)
    },
    true,
    trainableVariables(model.layers),
  )!
  const loss = cost.dataSync()[0]
  cost.dispose()
  return loss
}

async function compiled(
  model: LayersModel,
  optimizer: OptimizerName,
  lr: number,
  soft?: { temperature: number; alpha: number },
) {
  const step = await compileTrainStep(tf, {
    model,
    variables: trainableVariables(model.layers),
    optimizer,
    learningRate: lr,
    numClasses: K,
    soft,
  })
  if (!(step instanceof GraphTrainStep)) assert.fail(`does not compile: ${step.reason}`)
  return step
}

const LR: Record<OptimizerName, number> = { adam: 1e-3, rmsprop: 1e-3, sgd: 0.05 }

const cases: [ArchitectureId, OptimizerName][] = [
  ['mlp-small', 'adam'],
  ['mlp-large', 'rmsprop'],
  ['cnn-small', 'adam'],
  ['cnn-small', 'sgd'],
  ['cnn-small', 'rmsprop'],
  ['cnn-large', 'sgd'],
]

for (const [arch, optimizer] of cases) {
  test(`${arch} + ${optimizer}: 4 graph steps = 4 eager steps (losses, weights; same dropout masks)`, async () => {
    const g = build(arch)
    const e = build(arch)
    const step = await compiled(g, optimizer, LR[optimizer])
    const opt = makeOptimizer(tf, optimizer, LR[optimizer])
    const rg = new Rng(3)
    const re = new Rng(3)
    try {
      for (let s = 0; s < 4; s++) {
        const b = batch(arch, s * 24, 24)
        const stats = step.run(b.x, b.oneHot, null, rg)
        const [lossG, correct] = stats.dataSync()
        stats.dispose()
        const lossE = eagerStep(e, opt, b.x, b.labels, re)
        b.dispose()
        assert.ok(
          Math.abs(lossG - lossE) <= 1e-4 * Math.max(1, Math.abs(lossE)),
          `step ${s}: loss ${lossG} vs ${lossE}`,
        )
        assert.ok(Number.isInteger(correct) && correct >= 0 && correct <= 24, `correct ${correct}`)
      }
      // SGD moves weights by lr * gradient: a tight check of every hand-written gradient. Adam and RMSProp
      // divide by the gradient's running magnitude, so float noise in near-zero gradients moves a weight by
      // up to a fraction of the learning rate on either path.
      const bound =
        optimizer === 'sgd'
          ? 1e-4 * Math.max(1, ...e.weights.map((w) => tf.tidy(() => w.read().abs().max().dataSync()[0])))
          : 0.1 * LR[optimizer]
      const d = maxWeightDiff(g, e)
      assert.ok(d <= bound, `weights differ by ${d} > ${bound}`)
      assert.equal(rg.state, re.state, 'both paths drew the same dropout masks from the generator')
    } finally {
      step.dispose()
      opt.dispose()
      g.dispose()
      e.dispose()
    }
  })
}

test('distillation: graph loss = alpha T^2 KL + (1 - alpha) CE as the eager loss, over 3 steps', async () => {
  const soft = { temperature: 4, alpha: 0.7 }
  const g = build('cnn-small')
  const e = build('cnn-small')
  const step = await compiled(g, 'adam', 1e-3, soft)
  const opt = makeOptimizer(tf, 'adam', 1e-3)
  const rg = new Rng(9)
  const re = new Rng(9)
  try {
    for (let s = 0; s < 3; s++) {
      const b = batch('cnn-small', s * 32, 32)
      const probs = tf.tidy(() => tf.softmax(tf.randomNormal([32, K], 0, 2, 'float32', s + 1)))
      const stats = step.run(b.x, b.oneHot, probs, rg)
      const lossG = stats.dataSync()[0]
      stats.dispose()
      const lossE = eagerStep(e, opt, b.x, b.labels, re, { probs, ...soft })
      tf.dispose(probs)
      b.dispose()
      assert.ok(Math.abs(lossG - lossE) <= 1e-4 * Math.max(1, Math.abs(lossE)), `step ${s}: ${lossG} vs ${lossE}`)
    }
    assert.ok(maxWeightDiff(g, e) <= 1e-4)
  } finally {
    step.dispose()
    opt.dispose()
    g.dispose()
    e.dispose()
  }
})

test("optimizer state moves between paths: graph Adam's state resumes in tfjs's Adam and the other way", async () => {
  const g = build('cnn-small')
  const e = build('cnn-small')
  const step = await compiled(g, 'adam', 1e-3)
  const opt = makeOptimizer(tf, 'adam', 1e-3)
  const rg = new Rng(4)
  const re = new Rng(4)
  try {
    for (let s = 0; s < 2; s++) {
      const b = batch('cnn-small', s * 24, 24)
      step.run(b.x, b.oneHot, null, rg).dispose()
      eagerStep(e, opt, b.x, b.labels, re)
      b.dispose()
    }
    const fromGraph = await step.getWeights()
    const fromEager = await opt.getWeights()
    // tfjs's layout: iter, then every variable's first slot, then every variable's second slot
    const layout = (m: LayersModel) => {
      const names = trainableVariables(m.layers).map((v) => v.name)
      return ['iter', ...names.map((n) => `${n}/m`), ...names.map((n) => `${n}/v`)]
    }
    assert.deepEqual(
      fromGraph.map((w) => w.name),
      layout(g),
    )
    assert.deepEqual(
      fromEager.map((w) => w.name),
      layout(e),
    )
    assert.equal(fromGraph[0].tensor.dataSync()[0], 2, 'iterations')
    // swap: the eager model continues from the graph's state and the graph from the eager one's
    const resumedEager = makeOptimizer(tf, 'adam', 1e-3)
    await resumedEager.setWeights(fromGraph.map((w) => ({ name: w.name, tensor: tf.clone(w.tensor) })))
    await step.setWeights(fromEager)
    const b = batch('cnn-small', 48, 24)
    const stats = step.run(b.x, b.oneHot, null, rg)
    const lossG = stats.dataSync()[0]
    stats.dispose()
    const lossE = eagerStep(e, resumedEager, b.x, b.labels, re)
    b.dispose()
    resumedEager.dispose()
    assert.ok(Math.abs(lossG - lossE) <= 1e-4 * Math.max(1, lossE), `${lossG} vs ${lossE}`)
    assert.ok(maxWeightDiff(g, e) <= 1e-4, `weights ${maxWeightDiff(g, e)}`)
  } finally {
    step.dispose()
    opt.dispose()
    g.dispose()
    e.dispose()
  }
})

test('models outside the chain train eagerly, and the reason names the layer', () => {
  const input = tf.input({ shape: [8, 8, 1] })
  const conv = tf.layers.conv2d({ name: 'c', filters: 4, kernelSize: 3 }).apply(input) as any
  const bn = tf.layers.batchNormalization({ name: 'bn' }).apply(conv) as any
  const out = tf.layers
    .dense({ name: 'out', units: 3, activation: 'softmax' })
    .apply(tf.layers.flatten().apply(bn)) as any
  const withBn = tf.model({ inputs: input, outputs: out })
  const r1 = planTrainChain(withBn)
  assert.ok('reason' in r1)
  assert.equal(r1.layer, 'bn')
  assert.match(r1.reason, /BatchNormalization/)

  const a = tf.layers.dense({ name: 'a', units: 4, activation: 'relu' }).apply(tf.layers.flatten().apply(input)) as any
  const b = tf.layers.dense({ name: 'b', units: 4, activation: 'relu' }).apply(a) as any
  const sum = tf.layers.add({ name: 'sum' }).apply([a, b]) as any
  const y = tf.layers.dense({ name: 'y', units: 3, activation: 'softmax' }).apply(sum) as any
  const branchy = tf.model({ inputs: input, outputs: y })
  const r2 = planTrainChain(branchy)
  assert.ok('reason' in r2)
  assert.match(r2.reason, /chain|Add/)

  const sigmoidOut = tf.sequential({
    layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'sigmoid', name: 'sig' })],
  })
  const r3 = planTrainChain(sigmoidOut)
  assert.ok('reason' in r3)
  assert.match(r3.reason, /softmax/)
  for (const m of [withBn, branchy, sigmoidOut]) m.dispose()
})

test("a job's events say which training step ran: graph by default, eager with REFIT_FROZEN_GRAPH=off", async () => {
  const train = loadMnist('train', [0, 1, 2], 120)
  for (const mode of ['auto', 'off'] as const) {
    const events: string[] = []
    const result = await runSupervised({
      tf,
      backend: 'tensorflow',
      architecture: 'cnn-small',
      train,
      hyperparameters: { n_epochs: 2, batch_size: 32, learning_rate: 1e-3, validation_split: 0.2 },
      seed: 2,
      outputDir: path.join(work, `events-${mode}`),
      emit: (m: ChildMessage) => {
        if (m.type === 'event') events.push(m.message)
      },
      isCancelled: () => false,
      graph: { mode, cacheDir: null, cacheBytes: 0 },
    })
    assert.ok(result.modelDir, 'trained')
    const line = events.find((m) => m.startsWith('training step:'))
    assert.ok(line, `an event names the training step: ${events.join(' | ')}`)
    if (mode === 'auto') assert.match(line, /^training step: graph/)
    else assert.equal(line, 'training step: eager (REFIT_FROZEN_GRAPH=off)')
    assert.ok(result.evaluation && result.evaluation.accuracy > 0.5, `learns: ${result.evaluation?.accuracy}`)
  }
})

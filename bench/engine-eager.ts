// Eager training costs, before/after each change of issue 11 item 3 (src/engine/fast-layers.ts), one run:
// - a MobileNetV2 fine-tuning step (forward through the whole model with BatchNorm and ReLU(6) layers in
//   inference mode, gradients of the top block and the head), batch 16, ms/step: library layers vs fast layers;
// - the same model's eager forward (the path a model with an uncovered layer takes), batch 32, ms/image;
// - the logits of the head (matMul + add vs fused matMul with bias) inside a cnn-small training step;
// - a whole cnn-small training step (batch 128, adam): Relu gradients through tfjs's step() vs TensorFlow's
//   ReluGrad, the two variants interleaved round by round so that a busy machine slows both alike.
//
//   npx tsx bench/engine-eager.ts
import { mkdtemp, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import path from 'node:path'
import { findArchitecture } from '../src/engine/architectures.js'
import { selectBackend } from '../src/engine/backend.js'
import { ensureBuiltinModelDir } from '../src/engine/builtin-models.js'
import { useFastLayers } from '../src/engine/fast-layers.js'
import { loadModelForTraining } from '../src/engine/model-io.js'
import type { Scalar, Tensor, Tf, Variable } from '../src/engine/tf.js'
import { crossEntropy, logitsFn, trainableVariables } from '../src/engine/training.js'
import { writeResult } from './common.js'

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d

async function timeIt(n: number, fn: () => Promise<void>): Promise<number> {
  await fn() // warm-up
  const t0 = performance.now()
  for (let i = 0; i < n; i++) await fn()
  return (performance.now() - t0) / n
}

async function mobilenet(tf: Tf, work: string) {
  const dir = await ensureBuiltinModelDir('mobilenet-v2', path.join(work, 'models'))
  const model = await loadModelForTraining(tf, dir)
  const forward = logitsFn(tf, model)
  const top = model.layers.filter((l) => /^(block_16_|Conv_1|dense_)/.test(l.name))
  const variables: Variable[] = trainableVariables(top)
  const optimizer = tf.train.adam(1e-4)
  const x16 = tf.randomUniform([16, 224, 224, 3]) as Tensor
  const y16 = tf.oneHot(
    tf.tensor1d(
      Int32Array.from({ length: 16 }, (_, i) => i % 5),
      'int32',
    ),
    5,
  ) as Tensor
  const x32 = tf.randomUniform([32, 224, 224, 3]) as Tensor
  const step = async () => {
    const cost = optimizer.minimize(() => crossEntropy(tf, forward(x16), y16), true, variables) as Scalar
    await cost.data()
    cost.dispose()
  }
  const predict = async () => {
    const y = model.predict(x32) as Tensor
    await y.data()
    y.dispose()
  }
  const out: Record<string, unknown> = {}
  for (const fast of [false, true]) {
    useFastLayers(tf, fast)
    const side = fast ? 'after' : 'before'
    out[`finetune_step_ms_${side}`] = round(await timeIt(3, step))
    out[`eager_forward_ms_per_image_${side}`] = round((await timeIt(2, predict)) / 32, 2)
    console.log(side, JSON.stringify(out))
  }
  tf.dispose([x16, y16, x32])
  optimizer.dispose()
  model.dispose()
  return out
}

/** The head's logits: matMul + add (before) vs fused matMul with bias (after), [128, 64] x [64, 10]. */
async function logits(tf: Tf) {
  const h = tf.randomUniform([128, 64]) as Tensor
  const k = tf.variable(tf.randomUniform([64, 10]))
  const b = tf.variable(tf.zeros([10]))
  const y = tf.oneHot(
    tf.tensor1d(
      Int32Array.from({ length: 128 }, (_, i) => i % 10),
      'int32',
    ),
    10,
  ) as Tensor
  const opt = tf.train.adam(1e-3)
  const run = (fused: boolean) => async () => {
    for (let i = 0; i < 100; i++) {
      const cost = opt.minimize(
        () =>
          crossEntropy(
            tf,
            fused
              ? (tf.fused.matMul({ a: h as any, b: k as any, bias: b }) as Tensor)
              : (tf.add(tf.matMul(h as any, k as any), b) as Tensor),
            y,
          ),
        true,
        [k, b],
      ) as Scalar
      cost.dispose()
    }
  }
  const before = (await timeIt(3, run(false))) / 100
  const after = (await timeIt(3, run(true))) / 100
  tf.dispose([h, k, b, y])
  opt.dispose()
  return { logits_step_ms_before: round(before, 3), logits_step_ms_after: round(after, 3) }
}

/** cnn-small's training step, library layers and gradients vs fast ones, interleaved; median ms of each. */
async function cnnSmallStep(tf: Tf) {
  const model = findArchitecture('cnn-small')!.build(tf, [28, 28, 1], 10, 1)
  const forward = logitsFn(tf, model)
  const variables = trainableVariables(model.layers)
  const optimizer = tf.train.adam(1e-3)
  const x = tf.randomUniform([128, 28, 28, 1]) as Tensor
  const y = tf.oneHot(
    tf.tensor1d(
      Int32Array.from({ length: 128 }, (_, i) => i % 10),
      'int32',
    ),
    10,
  ) as Tensor
  const step = async () => {
    const cost = optimizer.minimize(() => crossEntropy(tf, forward(x), y), true, variables) as Scalar
    await cost.data()
    cost.dispose()
  }
  const times: Record<'before' | 'after', number[]> = { before: [], after: [] }
  for (let round = 0; round < 8; round++)
    for (const fast of [false, true]) {
      useFastLayers(tf, fast)
      times[fast ? 'after' : 'before'].push(await timeIt(5, step))
    }
  useFastLayers(tf, true)
  const median = (l: number[]) => [...l].sort((a, b) => a - b)[l.length >> 1]
  tf.dispose([x, y])
  optimizer.dispose()
  model.dispose()
  return {
    step_ms_before: round(median(times.before)),
    step_ms_after: round(median(times.after)),
    samples_per_second_before: Math.round((128 * 1000) / median(times.before)),
    samples_per_second_after: Math.round((128 * 1000) / median(times.after)),
  }
}

async function main() {
  const work = await mkdtemp(path.join(tmpdir(), 'refit-eager-'))
  const loadBefore = loadavg().map((l) => round(l))
  try {
    const { tf } = await selectBackend('tensorflow')
    const c = await cnnSmallStep(tf)
    console.log('cnn-small step', JSON.stringify(c))
    const m = await mobilenet(tf, work)
    const l = await logits(tf)
    const file = writeResult('engine-eager', {
      backend: 'tensorflow',
      load_average: { before: loadBefore, after: loadavg().map((x) => round(x)) },
      mobilenet_v2: m,
      head_logits: l,
      cnn_small_step: c,
      tidy: 'every training step runs inside optimizer.minimize (a tidy); test/engine/transfer.test.ts asserts a constant tensor count across epochs',
    })
    console.log(JSON.stringify({ ...c, ...m, ...l }), `\nwrote ${file}`)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  process.exit(0)
}

void main()

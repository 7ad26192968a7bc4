// The fast BatchNormalization (inference mode as x * s + o) and ReLU(maxValue) layers compute what the
// library's layers compute: outputs and gradients on a small model with trained-looking statistics, and
// MobileNetV2's probabilities, within 1e-4 * max(1, max|library|).
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { ensureBuiltinModelDir } from '../../src/engine/builtin-models.js'
import { useFastLayers } from '../../src/engine/fast-layers.js'
import { loadModel } from '../../src/engine/model-io.js'
import type { Tensor, Tf, Variable } from '../../src/engine/tf.js'

const { tf } = await selectBackend('tensorflow')
after(() => useFastLayers(tf, true))

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length)
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return d
}

function assertClose(fast: Float32Array, lib: Float32Array, what: string) {
  const bound = 1e-4 * Math.max(1, ...Array.from(lib, Math.abs))
  const d = maxDiff(fast, lib)
  assert.ok(d <= bound, `${what}: fast vs library ${d} > ${bound}`)
}

/** Both variants of `run`, library layers first; leaves the fast layers on. */
function both(t: Tf, run: () => Float32Array[]): [Float32Array[], Float32Array[]] {
  useFastLayers(t, false)
  const lib = run()
  useFastLayers(t, true)
  return [run(), lib]
}

test('BatchNormalization and ReLU(6), ReLU(3): outputs and gradients equal the library layers', () => {
  const input = tf.input({ shape: [6, 6, 3] })
  let h = tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same', useBias: false }).apply(input)
  const bn = tf.layers.batchNormalization({ epsilon: 1e-3 })
  h = bn.apply(h)
  h = tf.layers.reLU({ maxValue: 6 }).apply(h)
  h = tf.layers.batchNormalization({}).apply(h)
  h = tf.layers.reLU({ maxValue: 3 }).apply(h)
  h = tf.layers.reLU({}).apply(h)
  const out = tf.layers.globalAveragePooling2d({}).apply(h) as never
  const model = tf.model({ inputs: input, outputs: out })
  // statistics far from the initial 0/1, as a trained model has them
  const [gamma, beta, mean, variance] = bn.getWeights()
  bn.setWeights([
    tf.randomUniform(gamma.shape, 0.5, 2, 'float32', 1),
    tf.randomUniform(beta.shape, -1, 1, 'float32', 2),
    tf.randomUniform(mean.shape, -2, 2, 'float32', 3),
    tf.randomUniform(variance.shape, 0.1, 4, 'float32', 4),
  ])
  const x = tf.randomNormal([4, 6, 6, 3], 0, 3, 'float32', 5) as Tensor
  const vars = model.trainableWeights.map((w) => w.read() as Variable)
  const [fast, lib] = both(tf, () =>
    tf.tidy(() => {
      const y = model.apply(x, { training: false }) as Tensor
      const { grads } = tf.variableGrads(
        () => tf.sum(tf.square(model.apply(x, { training: false }) as Tensor)) as never,
        vars,
      )
      return [y.dataSync() as Float32Array, ...vars.map((v) => grads[v.name].dataSync() as Float32Array)]
    }),
  )
  assert.ok(Math.max(...Array.from(lib[0])) > 0, 'the outputs are not all zero')
  for (let i = 0; i < lib.length; i++)
    assertClose(fast[i], lib[i], i === 0 ? 'output' : `gradient of ${vars[i - 1].name}`)
  x.dispose()
  model.dispose()
})

test('MobileNetV2 probabilities equal the library layers', async () => {
  const work = await mkdtemp(path.join(tmpdir(), 'refit-fast-layers-'))
  const model = await loadModel(tf, await ensureBuiltinModelDir('mobilenet-v2', work))
  await rm(work, { recursive: true, force: true })
  const x = tf.randomUniform([4, 224, 224, 3], -1, 1, 'float32', 7) as Tensor
  const [fast, lib] = both(tf, () => tf.tidy(() => [(model.predict(x) as Tensor).dataSync() as Float32Array]))
  assertClose(fast[0], lib[0], 'probabilities')
  x.dispose()
  model.dispose()
})

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { backendCapabilities, SELF_TEST_TOLERANCE, selectBackend } from '../../src/engine/backend.js'

for (const name of ['tensorflow', 'wasm', 'cpu'] as const) {
  test(`${name} backend passes its self-test against cpu`, async () => {
    const selected = await selectBackend(name)
    assert.equal(selected.backend, name, JSON.stringify(selected.rejected))
    assert.equal(selected.tf.getBackend(), name)
    assert.ok(selected.selfTest.maxForwardDiff <= SELF_TEST_TOLERANCE.forward)
    assert.ok(selected.selfTest.maxGradDiff <= SELF_TEST_TOLERANCE.grad)
    assert.deepEqual(selected.rejected, [])
  })
}

test('wasm: fixed Conv2DBackpropFilter (strided, same padding) and MaxPoolGrad on negative windows match cpu', async () => {
  const { tf } = await selectBackend('wasm')
  const x = Array.from({ length: 2 * 7 * 7 * 3 }, (_, i) => Math.sin(i * 1.7) - 0.6)
  const w = Array.from({ length: 3 * 3 * 3 * 5 }, (_, i) => Math.cos(i * 0.9) * 0.3)
  const run = () =>
    tf.tidy(() => {
      const xt = tf.tensor4d(x, [2, 7, 7, 3])
      const wt = tf.tensor4d(w, [3, 3, 3, 5])
      const f = (a: any, b: any) => tf.sum(tf.mul(tf.maxPool(tf.conv2d(a, b, 2, 'same'), 2, 1, 'valid'), 1.5)) as any
      return tf
        .grads(f)([xt, wt])
        .map((g) => g.dataSync())
    })
  await tf.setBackend('cpu')
  const ref = run()
  await tf.setBackend('wasm')
  const got = run()
  let max = 0
  ref.forEach((r, i) => {
    r.forEach((v, j) => {
      max = Math.max(max, Math.abs(v - got[i][j]))
    })
  })
  assert.ok(max <= SELF_TEST_TOLERANCE.grad, `max gradient difference ${max}`)
  assert.ok(ref[1].some((v) => v !== 0))
})

test('capabilities: wasm has no depthwise conv gradients', () => {
  assert.equal(backendCapabilities('wasm').depthwiseConvGradients, false)
  assert.equal(backendCapabilities('tensorflow').depthwiseConvGradients, true)
  assert.equal(backendCapabilities('cpu').depthwiseConvGradients, true)
})

import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { loadModel, readMetadata, saveModel } from '../../src/engine/model-io.js'
import type { ModelMetadata } from '../../src/engine/protocol.js'
import type { Tf } from '../../src/engine/tf.js'

let tf: Tf
let work: string
before(async () => {
  ;({ tf } = await selectBackend('tensorflow'))
  work = await mkdtemp(path.join(tmpdir(), 'refit-io-'))
})
after(() => rm(work, { recursive: true, force: true }))

const metadata: ModelMetadata = {
  input_shape: [8, 8, 1],
  preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
  classes: ['a', 'b', 'c'],
  feature_layer: 'flat',
}

test('save then load (ours on tensorflow and cpu, stock file:// loader) gives the same predictions', async () => {
  const m = tf.sequential()
  m.add(
    tf.layers.conv2d({
      inputShape: [8, 8, 1],
      filters: 4,
      kernelSize: 3,
      activation: 'relu',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }),
    }),
  )
  m.add(tf.layers.flatten({ name: 'flat' }))
  m.add(
    tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
  )
  const dir = path.join(work, 'm1')
  await saveModel(tf, m, dir, metadata)
  assert.deepEqual(await readMetadata(dir), metadata)
  const x = tf.tensor4d(
    Array.from({ length: 2 * 64 }, (_, i) => (i % 17) / 17),
    [2, 8, 8, 1],
  )
  const expected = (m.predict(x) as any).dataSync() as Float32Array

  const ours = await loadModel(tf, dir)
  const stock = await (tf as any).loadLayersModel(`file://${dir}/model.json`)
  for (const loaded of [ours, stock]) {
    const got = (loaded.predict(x) as any).dataSync() as Float32Array
    assert.deepEqual(Array.from(got), Array.from(expected))
  }
  await tf.setBackend('cpu')
  const onCpu = await loadModel(tf, dir)
  const got = (onCpu.predict(x) as any).dataSync() as Float32Array
  for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i] - expected[i]) < 1e-5)
  await tf.setBackend('tensorflow')
  tf.dispose([x])
})

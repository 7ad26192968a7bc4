// The memory estimator: its shape and parameter walk agrees with TF.js on every preset and built-in model,
// and its estimates stay within 2x of the peak RSS measured by bench/memory.ts (bench/results/memory.json)
// on real training and inference processes.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { ARCHITECTURES } from '../../src/engine/architectures.js'
import { selectBackend } from '../../src/engine/backend.js'
import {
  analyzeTopology,
  estimateInference,
  estimateJob,
  type JobShape,
  presetImageShape,
  presetTopology,
  readModelShape,
} from '../../src/engine/memory-estimate.js'
import { loadModel } from '../../src/engine/model-io.js'
import type { Tf } from '../../src/engine/tf.js'
import { projectRoot } from '../../src/lib/paths.js'
import { modelRefDir } from '../helpers/memory-fixtures.js'

let tf: Tf
let work: string
before(async () => {
  tf = (await selectBackend('cpu')).tf
  work = await mkdtemp(join(tmpdir(), 'refit-memory-estimate-'))
})
after(async () => {
  await rm(work, { recursive: true, force: true })
})

test('presets: the topology the estimator walks has the layers, shapes and parameters TF.js builds', () => {
  const inputs: Record<string, number[][]> = {
    image: [
      [28, 28, 1],
      [96, 128, 3],
    ],
    any: [[64], [28, 28, 1]],
  }
  for (const arch of ARCHITECTURES) {
    for (const shape of inputs[arch.inputs === 'image' ? 'image' : 'any']) {
      const model = arch.build(tf, shape, 7, 1)
      try {
        const cost = analyzeTopology(presetTopology(arch.id, shape, 7), shape)
        const label = `${arch.id} on [${shape}]`
        assert.equal(cost.params, model.countParams(), label)
        const withWeightsOrShape = model.layers.filter((l) => l.getClassName() !== 'InputLayer')
        assert.deepEqual(
          cost.layers.map((l) => [l.name, l.outputShape]),
          withWeightsOrShape.map((l) => [l.name, (l.outputShape as number[]).slice(1)]),
          label,
        )
      } finally {
        model.dispose()
      }
    }
  }
})

test('built-ins: shapes and parameters from model.json alone match the loaded model', async () => {
  for (const ref of ['mnist-cnn', 'mobilenet-v2', 'inception-v3']) {
    const dir = await modelRefDir(ref, work)
    const m = await readModelShape(dir)
    const cost = analyzeTopology(m.topology, m.inputShape)
    assert.equal(cost.params, m.params, `${ref}: layer formulas vs weights manifest`)
    const model = await loadModel(tf, dir)
    try {
      assert.equal(cost.params, model.countParams(), ref)
      const byName = new Map(cost.layers.map((l) => [l.name, l.outputShape]))
      for (const layer of model.layers) {
        if (layer.getClassName() === 'InputLayer') continue
        assert.deepEqual(byName.get(layer.name), (layer.outputShape as number[]).slice(1), `${ref} ${layer.name}`)
      }
    } finally {
      model.dispose()
    }
  }
})

test('presets scale images down to fit 128x128, aspect kept, never up', () => {
  assert.deepEqual(presetImageShape([512, 512, 3]), [128, 128, 3])
  assert.deepEqual(presetImageShape([600, 300, 1]), [128, 64, 1])
  assert.deepEqual(presetImageShape([100, 1000, 3]), [13, 128, 3])
  assert.deepEqual(presetImageShape([28, 28, 1]), [28, 28, 1])
})

test('estimates are within 2x of the peak RSS measured on real processes (bench/results/memory.json)', async () => {
  const results = JSON.parse(readFileSync(join(projectRoot, 'bench/results/memory.json'), 'utf8')) as {
    cases: { case: string; kind: string; measured_peak_rss_bytes: number; shape: any }[]
  }
  assert.ok(results.cases.length >= 12, 'the bench covers presets, built-ins and inference')
  const resolve = async (ref: { model: string }) => readModelShape(await modelRefDir(ref.model, work))
  for (const c of results.cases) {
    let estimate: number
    if (c.kind === 'training') {
      const shape = { ...c.shape } as JobShape
      if (!('preset' in c.shape.base)) shape.base = await resolve(c.shape.base)
      if (c.shape.teacher) shape.teacher = await resolve(c.shape.teacher)
      estimate = estimateJob(shape).totalBytes
    } else {
      const m = await resolve(c.shape)
      estimate = estimateInference(
        analyzeTopology(m.topology, m.inputShape),
        c.shape.batch,
        m.params ?? undefined,
        undefined,
        true, // the bench's inference processes compile every model (no memory limit)
      ).totalBytes
    }
    const ratio = estimate / c.measured_peak_rss_bytes
    assert.ok(ratio >= 0.5 && ratio <= 2, `${c.case}: estimate ${estimate} vs measured ${c.measured_peak_rss_bytes}`)
  }
})

test('the probe cases: big images cost a preset nothing more; a one-conv model on 2048x2048 costs its activations', () => {
  const probe = (side: number): JobShape => ({
    method: 'supervised',
    base: { preset: 'cnn-small' },
    file: { kind: 'image', imageShape: [side, side, 3], rows: 8, classes: 2 },
    batchSize: 8,
  })
  const at512 = estimateJob(probe(512))
  const at128 = estimateJob(probe(128))
  // only the stored uint8 pixels differ (they are loaded at 128x128 too): same network, same activations
  assert.equal(at512.activationBytes, at128.activationBytes)
  assert.equal(at512.parameterBytes, at128.parameterBytes)
  const conv = {
    class_name: 'Sequential',
    config: {
      layers: [
        { class_name: 'Conv2D', config: { name: 'c', filters: 8, kernel_size: 3, padding: 'same' } },
        { class_name: 'GlobalAveragePooling2D', config: { name: 'p' } },
        { class_name: 'Dense', config: { name: 'd', units: 2 } },
      ],
    },
  }
  const small = estimateInference(analyzeTopology(conv, [8, 8, 3]), 2)
  const huge = estimateInference(analyzeTopology(conv, [2048, 2048, 3]), 2)
  assert.equal(small.parameterBytes, huge.parameterBytes)
  assert.ok(huge.activationBytes > 1024 ** 3, `2048x2048: ${huge.activationBytes}`)
  assert.ok(small.activationBytes < 1024 ** 2)
})

// The three methods on one backend, small data: they finish, learn something, and leak no tensors across
// epochs. Run by methods-<backend>.test.ts. On CI a backend that cannot load fails the test; elsewhere it skips.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'
import { selectBackend } from '../../src/engine/backend.js'
import { builtinModelSourceDir } from '../../src/engine/builtin-models.js'
import { runDistillation } from '../../src/engine/distillation.js'
import { loadMnist } from '../../src/engine/mnist-idx.js'
import type { BackendName } from '../../src/engine/protocol.js'
import { runSupervised } from '../../src/engine/supervised.js'
import type { Tf } from '../../src/engine/tf.js'
import type { RunResult } from '../../src/engine/training.js'
import { runTransfer } from '../../src/engine/transfer.js'

export function defineMethodMatrix(backend: BackendName, size: { samples: number; epochs: number }): void {
  let tf: Tf | null = null
  let skip: string | false = false
  let work: string
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), `refit-${backend}-`))
    const selected = await selectBackend(backend)
    if (selected.backend !== backend) {
      const why = `${backend} unavailable: ${JSON.stringify(selected.rejected)}`
      if (process.env.CI === 'true') throw new Error(why)
      skip = why
      return
    }
    tf = selected.tf
  })
  after(() => rm(work, { recursive: true, force: true }))

  const common = (name: string, numTensors: number[]) => ({
    tf: tf!,
    backend,
    hyperparameters: { n_epochs: size.epochs, batch_size: 16, learning_rate: 1e-3, validation_split: 0.25 },
    seed: 5,
    outputDir: path.join(work, name),
    emit: () => {},
    isCancelled: () => false,
    onEpochEnd: () => numTensors.push(tf!.memory().numTensors),
  })
  const check = (r: RunResult, numTensors: number[], minAcc: number) => {
    assert.equal(r.cancelled, false)
    assert.ok(r.modelDir)
    assert.ok(r.evaluation && r.evaluation.accuracy >= minAcc, `accuracy ${r.evaluation?.accuracy}`)
    assert.equal(numTensors.length, size.epochs)
    assert.equal(new Set(numTensors).size, 1, `tensors at epoch ends ${numTensors}`)
  }

  test(`${backend}: transfer (mnist-cnn, digits 5-9)`, async (t) => {
    if (skip) return t.skip(skip)
    const n: number[] = []
    const r = await runTransfer({
      ...common('transfer', n),
      baseModelDir: builtinModelSourceDir('mnist-cnn'),
      train: loadMnist('train', [5, 6, 7, 8, 9], size.samples),
    })
    check(r, n, 0.6)
  })

  test(`${backend}: supervised (mlp-small from scratch, digits 0-4)`, async (t) => {
    if (skip) return t.skip(skip)
    const n: number[] = []
    const r = await runSupervised({
      ...common('supervised', n),
      architecture: 'mlp-small',
      train: loadMnist('train', [0, 1, 2, 3, 4], size.samples),
    })
    check(r, n, 0.6)
  })

  test(`${backend}: distillation (mnist-cnn teacher, mlp-small student, digits 0-4)`, async (t) => {
    if (skip) return t.skip(skip)
    const n: number[] = []
    const r = await runDistillation({
      ...common('distillation', n),
      architecture: 'mlp-small',
      teacherModelDir: builtinModelSourceDir('mnist-cnn'),
      temperature: 4,
      alpha: 0.7,
      train: loadMnist('train', [0, 1, 2, 3, 4], size.samples),
    })
    check(r, n, 0.6)
  })
}

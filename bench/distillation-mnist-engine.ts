// Knowledge distillation on MNIST, Hinton et al. (2015) scaled to this machine: a CNN teacher trained
// supervised, then an MLP student 784-800-800-10 (`mlp-large`) trained supervised vs distilled at T in {2,4,8};
// alpha picked per T on a validation split (seed 1), then 2 seeds each; test error on the 10k test set.
// Calls the engine directly (runSupervised / runDistillation); ~15 min on tensorflow. bench/distillation-mnist.ts
// runs the same study through the HTTP API of a real service.
// Run: npx tsx bench/distillation-mnist-engine.ts   (env STUDENT_SAMPLES, STUDENT_EPOCHS, TEACHER_EPOCHS to scale)
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { LoadedDataset } from '../src/datasets/types.js'
import { selectBackend } from '../src/engine/backend.js'
import { runDistillation } from '../src/engine/distillation.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import { loadModel, readMetadata } from '../src/engine/model-io.js'
import { toInputTensor } from '../src/engine/preprocess.js'
import type { TrainHyperparameters } from '../src/engine/protocol.js'
import { runSupervised } from '../src/engine/supervised.js'
import type { Tensor, Tf } from '../src/engine/tf.js'
import type { RunOptions } from '../src/engine/training.js'
import { writeResult } from './common.js'

const DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
const STUDENT_SAMPLES = Number(process.env.STUDENT_SAMPLES ?? 10000)
const STUDENT_EPOCHS = Number(process.env.STUDENT_EPOCHS ?? 10)
const TEACHER_EPOCHS = Number(process.env.TEACHER_EPOCHS ?? 4)
const TEMPERATURES = [2, 4, 8]
const ALPHAS = [0.5, 0.9]
const SEEDS = [1, 2]

async function testError(tf: Tf, modelDir: string, test: LoadedDataset): Promise<number> {
  const meta = await readMetadata(modelDir)
  const model = await loadModel(tf, modelDir)
  let wrong = 0
  for (let start = 0; start < test.rows; start += 1000) {
    const rows = Int32Array.from({ length: Math.min(1000, test.rows - start) }, (_, i) => start + i)
    const pred = tf.tidy(() =>
      (model.predict(toInputTensor(tf, test, meta.preprocessing, meta.input_shape, rows)) as Tensor).argMax(-1),
    )
    const p = (await pred.data()) as Int32Array
    pred.dispose()
    rows.forEach((r, i) => {
      if (p[i] !== test.y[r]) wrong++
    })
  }
  model.dispose()
  return wrong / test.rows
}

async function main(): Promise<void> {
  const t0 = performance.now()
  const { tf, backend } = await selectBackend((process.argv[2] as 'tensorflow') ?? 'tensorflow')
  const work = await mkdtemp(path.join(tmpdir(), 'refit-distill-bench-'))
  const full = loadMnist('train', DIGITS)
  const test = loadMnist('test', DIGITS)
  const studentTrain = loadMnist('train', DIGITS, STUDENT_SAMPLES)
  let n = 0
  const base = (hp: TrainHyperparameters, seed: number, train: LoadedDataset): RunOptions => ({
    tf,
    backend,
    train,
    hyperparameters: hp,
    seed,
    outputDir: path.join(work, `run-${++n}`),
    emit: () => {},
    isCancelled: () => false,
  })
  const studentHp: TrainHyperparameters = {
    n_epochs: STUDENT_EPOCHS,
    batch_size: 128,
    learning_rate: 1e-3,
    validation_split: 0.1,
  }
  try {
    console.log(`backend ${backend}; teacher cnn-small on ${full.rows} samples, ${TEACHER_EPOCHS} epochs`)
    const teacher = await runSupervised({
      ...base({ n_epochs: TEACHER_EPOCHS, batch_size: 128, learning_rate: 1e-3, validation_split: 0.05 }, 1, full),
      architecture: 'cnn-small',
    })
    const teacherError = await testError(tf, teacher.modelDir!, test)
    console.log(
      `teacher test error ${(teacherError * 100).toFixed(2)}% (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    )

    // alpha per temperature, chosen on the student's validation split with seed 1
    const chosen: Record<number, { alpha: number; val_accuracy: number }> = {}
    for (const T of TEMPERATURES) {
      for (const alpha of ALPHAS) {
        const r = await runDistillation({
          ...base(studentHp, 1, studentTrain),
          architecture: 'mlp-large',
          teacherModelDir: teacher.modelDir!,
          temperature: T,
          alpha,
        })
        const acc = r.evaluation!.accuracy
        console.log(`  T=${T} alpha=${alpha}: validation accuracy ${acc.toFixed(4)}`)
        if (!chosen[T] || acc > chosen[T].val_accuracy) chosen[T] = { alpha, val_accuracy: acc }
      }
    }
    const rows: Record<string, unknown>[] = []
    for (const seed of SEEDS) {
      const sup = await runSupervised({ ...base(studentHp, seed, studentTrain), architecture: 'mlp-large' })
      const e = await testError(tf, sup.modelDir!, test)
      rows.push({ student: 'supervised', seed, test_error: e })
      console.log(`seed ${seed} supervised: test error ${(e * 100).toFixed(2)}%`)
      for (const T of TEMPERATURES) {
        const d = await runDistillation({
          ...base(studentHp, seed, studentTrain),
          architecture: 'mlp-large',
          teacherModelDir: teacher.modelDir!,
          temperature: T,
          alpha: chosen[T].alpha,
        })
        const de = await testError(tf, d.modelDir!, test)
        rows.push({ student: 'distilled', temperature: T, alpha: chosen[T].alpha, seed, test_error: de })
        console.log(`seed ${seed} distilled T=${T} alpha=${chosen[T].alpha}: test error ${(de * 100).toFixed(2)}%`)
      }
    }
    const file = writeResult('distillation-mnist-engine', {
      backend,
      teacher: {
        architecture: 'cnn-small',
        train_samples: full.rows,
        epochs: TEACHER_EPOCHS,
        test_error: teacherError,
      },
      student: {
        architecture: 'mlp-large',
        train_samples: STUDENT_SAMPLES,
        epochs: STUDENT_EPOCHS,
        hyperparameters: studentHp,
      },
      alpha_selection: chosen,
      results: rows,
      test_samples: test.rows,
      seconds: Math.round((performance.now() - t0) / 1000),
    })
    console.log(`wrote ${file}`)
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

// Training throughput of the engine itself (no API, no queue): samples/s per backend per method on MNIST.
// Steady-state figure = training samples of epochs 2..n over their wall time (epoch 1 includes feature
// caching, teacher targets and warm-up). Run: npx tsx bench/engine-speed.ts [tensorflow,wasm,cpu]
import { mkdtemp, rm } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import path from 'node:path'
import { selectBackend } from '../src/engine/backend.js'
import { builtinModelSourceDir } from '../src/engine/builtin-models.js'
import { runDistillation } from '../src/engine/distillation.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import type { BackendName, TrainHyperparameters } from '../src/engine/protocol.js'
import { runSupervised } from '../src/engine/supervised.js'
import type { RunOptions, RunResult } from '../src/engine/training.js'
import { runTransfer } from '../src/engine/transfer.js'
import { writeResult } from './common.js'

const SAMPLES: Record<BackendName, number> = { tensorflow: 3000, wasm: 1500, cpu: 150 }
const EPOCHS = 3

async function main(): Promise<void> {
  const backends = (process.argv[2]?.split(',') ?? ['tensorflow', 'wasm', 'cpu']) as BackendName[]
  const work = await mkdtemp(path.join(tmpdir(), 'refit-bench-'))
  const figures: Record<string, unknown>[] = []
  try {
    for (const backend of backends) {
      const selected = await selectBackend(backend)
      if (selected.backend !== backend) {
        console.log(`${backend}: unavailable (${selected.rejected.map((r) => r.reason).join('; ')})`)
        continue
      }
      const tf = selected.tf
      const n = SAMPLES[backend]
      const methods: Record<string, (o: RunOptions) => Promise<RunResult>> = {
        'transfer mnist-cnn (cached features)': (o) =>
          runTransfer({
            ...o,
            baseModelDir: builtinModelSourceDir('mnist-cnn'),
            train: loadMnist('train', [5, 6, 7, 8, 9], n),
          }),
        'supervised mlp-small': (o) => runSupervised({ ...o, architecture: 'mlp-small' }),
        'supervised cnn-small': (o) => runSupervised({ ...o, architecture: 'cnn-small' }),
        'distillation mnist-cnn -> mlp-small (T=4)': (o) =>
          runDistillation({
            ...o,
            architecture: 'mlp-small',
            teacherModelDir: builtinModelSourceDir('mnist-cnn'),
            temperature: 4,
            alpha: 0.7,
          }),
      }
      for (const [method, fn] of Object.entries(methods)) {
        const epochEnds: number[] = []
        const hp: TrainHyperparameters = {
          n_epochs: EPOCHS,
          batch_size: 64,
          learning_rate: 1e-3,
          validation_split: 0.1,
        }
        const t0 = performance.now()
        const result = await fn({
          tf,
          backend,
          train: loadMnist('train', [0, 1, 2, 3, 4], n),
          hyperparameters: hp,
          seed: 1,
          outputDir: path.join(work, `${backend}-${figures.length}`),
          emit: () => {},
          isCancelled: () => false,
          onEpochEnd: () => epochEnds.push(performance.now()),
        })
        const total = (performance.now() - t0) / 1000
        const perEpoch = result.trainedSamples / EPOCHS
        const steady = (perEpoch * (EPOCHS - 1)) / ((epochEnds.at(-1)! - epochEnds[0]) / 1000)
        const row = {
          backend,
          method,
          train_samples_per_epoch: Math.round(perEpoch),
          epochs: EPOCHS,
          batch_size: hp.batch_size,
          steady_samples_per_second: Math.round(steady),
          end_to_end_seconds: Number(total.toFixed(2)),
          validation_accuracy: result.evaluation?.accuracy ?? null,
        }
        figures.push(row)
        console.log(
          `${backend.padEnd(10)} ${method.padEnd(42)} ${String(row.steady_samples_per_second).padStart(7)} samples/s  (end to end ${row.end_to_end_seconds} s, val acc ${row.validation_accuracy?.toFixed(3)})`,
        )
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true })
  }
  const file = writeResult('engine-speed', { cpus: cpus().length, cpu_model: cpus()[0]?.model, figures })
  console.log(`wrote ${file}`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})

// Estimator vs measured: peak RSS (VmHWM) of real training and inference processes (dist/, as the worker
// and the API fork them) on our presets and built-ins, next to what src/engine/memory-estimate.ts predicts
// from the topology alone. The estimate should be within 2x; test/engine/memory-estimate.test.ts checks the
// committed figures against the current estimator.
//   npm run build && npx tsx bench/memory.ts            -> bench/results/memory.json
import { fork } from 'node:child_process'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import path from 'node:path'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { builtinModelSourceDir, ensureBuiltinModelDir } from '../src/engine/builtin-models.js'
import {
  analyzeTopology,
  estimateInference,
  estimateJob,
  type JobShape,
  type MemoryEstimate,
  readModelShape,
} from '../src/engine/memory-estimate.js'
import type { ChildMessage, TrainRequest } from '../src/engine/protocol.js'
import type { InferenceChildMessage, RawInputs } from '../src/inference/protocol.js'
import { readProcMemory } from '../src/lib/memory-watchdog.js'
import { projectRoot } from '../src/lib/paths.js'
import {
  convModel,
  denseModel,
  imageZip,
  solidPng,
  tabularCsv,
  writeModelDir,
} from '../test/helpers/memory-fixtures.js'
import { writeResult } from './common.js'

const MiB = 1024 ** 2

/** One measured case: what it is, what the estimator says, what the kernel saw. */
export interface MemoryCase {
  case: string
  kind: 'training' | 'inference'
  estimate_bytes: number
  measured_peak_rss_bytes: number
  ratio: number
  /** the estimator's inputs, so the unit test can recompute the estimate */
  shape: unknown
}

/** Forks a training process (dist), trains `req`, returns its peak RSS read just before it exits. */
function measureTraining(req: TrainRequest): Promise<number> {
  const child = fork(path.join(projectRoot, 'dist/workers/children/training-child.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  })
  return new Promise((resolve, reject) => {
    let peak = 0
    const timer = setInterval(() => {
      peak = Math.max(peak, readProcMemory(child.pid!)?.peakRssBytes ?? 0)
    }, 50)
    child.on('message', (m: ChildMessage) => {
      peak = Math.max(peak, readProcMemory(child.pid!)?.peakRssBytes ?? 0)
      if (m.type === 'error') reject(new Error(`${m.code}: ${m.message}`))
    })
    child.on('exit', () => {
      clearInterval(timer)
      resolve(peak)
    })
    child.send(req)
  })
}

/** Forks an inference process (dist), runs one prediction, returns its peak RSS. */
function measureInference(dir: string, inputs: RawInputs): Promise<number> {
  const child = fork(path.join(projectRoot, 'dist/workers/children/inference-child.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  })
  return new Promise((resolve, reject) => {
    child.on('message', (m: InferenceChildMessage) => {
      if (m.type === 'ready') child.send({ type: 'predict', id: 1, model: { key: dir, dir }, inputs })
      else if (m.type === 'result' || m.type === 'failed' || m.type === 'fatal') {
        const peak = readProcMemory(child.pid!)?.peakRssBytes ?? 0
        child.kill('SIGKILL')
        if (m.type === 'result') resolve(peak)
        else reject(new Error(m.message))
      }
    })
    child.send({ type: 'init', backend: 'tensorflow', cacheBytes: 512 * MiB })
  })
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'refit-memory-bench-'))
  const cases: MemoryCase[] = []
  const record = (name: string, kind: MemoryCase['kind'], e: MemoryEstimate, measured: number, shape: unknown) => {
    const c = {
      case: name,
      kind,
      estimate_bytes: e.totalBytes,
      measured_peak_rss_bytes: measured,
      ratio: Math.round((e.totalBytes / measured) * 100) / 100,
      shape,
    }
    cases.push(c)
    console.log(
      `${name.padEnd(58)} estimate ${String(Math.round(e.totalBytes / MiB)).padStart(5)} MiB  measured ${String(Math.round(measured / MiB)).padStart(5)} MiB  ratio ${c.ratio}`,
    )
  }
  const only = process.argv[2] ? new RegExp(process.argv[2]) : null
  try {
    const mnist = path.join(work, 'mnist.zip')
    await makeMnistDataset({
      split: 'train',
      digits: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      format: 'idx',
      limit: 3000,
      out: mnist,
    })
    const mnist04 = path.join(work, 'mnist04.zip')
    await makeMnistDataset({ split: 'train', digits: [0, 1, 2, 3, 4], format: 'idx', limit: 3000, out: mnist04 })
    const csv = path.join(work, 'tab.csv')
    await writeFile(csv, tabularCsv(2000, 64, 4))
    const probeZip = path.join(work, 'probe.zip')
    await writeFile(probeZip, await imageZip(8, 512, 512, 2))
    const rgb96 = path.join(work, 'rgb96.zip')
    await writeFile(rgb96, await imageZip(64, 96, 96, 4))
    const rgb224 = path.join(work, 'rgb224.zip')
    await writeFile(rgb224, await imageZip(40, 224, 224, 2))
    const mobilenet = await ensureBuiltinModelDir('mobilenet-v2', path.join(work, 'models'))
    const mnistCnn = builtinModelSourceDir('mnist-cnn')
    // the results name models, not their (large) topologies: resolveModelRef turns a name back into a ModelShape
    const refOf = new Map<string, string>([
      [mnistCnn, 'mnist-cnn'],
      [mobilenet, 'mobilenet-v2'],
    ])
    const shapes = new Map<unknown, string>()
    const readShape = async (dir: string) => {
      const m = await readModelShape(dir)
      shapes.set(m, refOf.get(dir)!)
      return m
    }
    const shapeRef = (s: JobShape) => ({
      ...s,
      base: 'preset' in s.base ? s.base : { model: shapes.get(s.base) },
      teacher: s.teacher ? { model: shapes.get(s.teacher) } : undefined,
    })

    const train = async (
      name: string,
      file: { path: string; format: TrainRequest['training']['format'] },
      shape: JobShape,
      spec: Pick<TrainRequest, 'method' | 'architecture' | 'baseModelDir'>,
    ) => {
      if (only && !only.test(name)) return
      const outputDir = path.join(work, 'out', name.replace(/\W+/g, '-'))
      await mkdir(outputDir, { recursive: true })
      const req: TrainRequest = {
        type: 'train',
        jobId: `bench-${cases.length}`,
        ...spec,
        training: file,
        hyperparameters: {
          n_epochs: 1,
          batch_size: shape.batchSize,
          learning_rate: 1e-3,
          validation_split: 0.1,
          optimizer: shape.optimizer,
        },
        seed: 1,
        outputDir,
        backend: 'tensorflow',
      }
      record(name, 'training', estimateJob(shape), await measureTraining(req), shapeRef(shape))
    }
    const sup = { type: 'supervised' } as const
    const mnistFile = { kind: 'image' as const, imageShape: [28, 28, 1], rows: 2700, classes: 10 }
    await train(
      'supervised mlp-small, tabular 2000x64, batch 32',
      { path: csv, format: 'csv' },
      {
        method: 'supervised',
        base: { preset: 'mlp-small' },
        file: { kind: 'tabular', features: 64, rows: 1800, classes: 4 },
        validationRows: 200,
        batchSize: 32,
      },
      { method: sup, architecture: 'mlp-small' },
    )
    await train(
      'supervised mlp-large, MNIST 3000, batch 64',
      { path: mnist, format: 'idx' },
      {
        method: 'supervised',
        base: { preset: 'mlp-large' },
        file: mnistFile,
        validationRows: 300,
        batchSize: 64,
      },
      { method: sup, architecture: 'mlp-large' },
    )
    for (const preset of ['cnn-small', 'cnn-large'] as const)
      await train(
        `supervised ${preset}, MNIST 3000, batch 64`,
        { path: mnist, format: 'idx' },
        {
          method: 'supervised',
          base: { preset },
          file: mnistFile,
          validationRows: 300,
          batchSize: 64,
        },
        { method: sup, architecture: preset },
      )
    await train(
      'supervised cnn-large, 64 PNGs 96x96x3, batch 32',
      { path: rgb96, format: 'image_zip' },
      {
        method: 'supervised',
        base: { preset: 'cnn-large' },
        file: { kind: 'image', imageShape: [96, 96, 3], rows: 58, classes: 4 },
        validationRows: 6,
        batchSize: 32,
      },
      { method: sup, architecture: 'cnn-large' },
    )
    await train(
      'probe: cnn-small, 8 PNGs 512x512 (fit to 128x128), batch 8',
      { path: probeZip, format: 'image_zip' },
      {
        method: 'supervised',
        base: { preset: 'cnn-small' },
        file: { kind: 'image', imageShape: [512, 512, 3], rows: 7, classes: 2 },
        validationRows: 1,
        batchSize: 8,
      },
      { method: sup, architecture: 'cnn-small' },
    )
    await train(
      'transfer mnist-cnn, MNIST 3000, batch 64',
      { path: mnist, format: 'idx' },
      {
        method: 'transfer',
        base: await readShape(mnistCnn),
        file: mnistFile,
        validationRows: 300,
        batchSize: 64,
      },
      { method: { type: 'transfer' }, baseModelDir: mnistCnn },
    )
    await train(
      'supervised mnist-cnn (all layers), MNIST 3000, batch 64',
      { path: mnist, format: 'idx' },
      {
        method: 'supervised',
        base: await readShape(mnistCnn),
        file: mnistFile,
        validationRows: 300,
        batchSize: 64,
      },
      { method: sup, baseModelDir: mnistCnn },
    )
    await train(
      'distillation mnist-cnn -> mlp-small, MNIST 0-4 3000, batch 64',
      { path: mnist04, format: 'idx' },
      {
        method: 'distillation',
        base: { preset: 'mlp-small' },
        teacher: await readShape(mnistCnn),
        file: { ...mnistFile, classes: 5 },
        validationRows: 300,
        batchSize: 64,
      },
      {
        method: { type: 'distillation', teacherModelDir: mnistCnn, temperature: 4, alpha: 0.7 },
        architecture: 'mlp-small',
      },
    )
    await train(
      'transfer mobilenet-v2, 40 PNGs 224x224x3, batch 16',
      { path: rgb224, format: 'image_zip' },
      {
        method: 'transfer',
        base: await readShape(mobilenet),
        file: { kind: 'image', imageShape: [224, 224, 3], rows: 36, classes: 2 },
        validationRows: 4,
        batchSize: 16,
      },
      { method: { type: 'transfer' }, baseModelDir: mobilenet },
    )

    const infer = async (name: string, dir: string, batch: number, png: Buffer) => {
      if (only && !only.test(name)) return
      const m = await readModelShape(dir)
      const cost = analyzeTopology(m.topology, m.inputShape)
      // the bench's inference processes have no memory limit: every model compiles into a graph first
      const e = estimateInference(cost, batch, m.params ?? undefined, undefined, true)
      const inputs: RawInputs = { kind: 'image', images: Array.from({ length: batch }, () => new Uint8Array(png)) }
      record(name, 'inference', e, await measureInference(dir, inputs), { model: refOf.get(dir), batch })
    }
    const png28 = await solidPng(28, 28, 90, 1)
    const png224 = await solidPng(224, 224, 90)
    await infer('predict mnist-cnn, batch 1', mnistCnn, 1, png28)
    await infer('predict mnist-cnn, batch 64', mnistCnn, 64, png28)
    await infer('predict mobilenet-v2, batch 1', mobilenet, 1, png224)
    await infer('predict mobilenet-v2, batch 32', mobilenet, 32, png224)
    const conv1024 = await writeModelDir(path.join(work, 'conv1024'), convModel(1024), [1024, 1024, 3])
    refOf.set(conv1024, 'conv:1024')
    await infer('predict one-conv model 1024x1024x3, batch 2 (8x8 PNGs)', conv1024, 2, await solidPng(8, 8, 90))
    const conv2048 = await writeModelDir(path.join(work, 'conv2048'), convModel(2048), [2048, 2048, 3])
    refOf.set(conv2048, 'conv:2048')
    await infer('probe: one-conv model 2048x2048x3, batch 1 (8x8 PNG)', conv2048, 1, await solidPng(8, 8, 90))

    // models whose weights dominate: loading holds them three times at the peak (file, decoded, tensors)
    for (const [features, units] of [
      [1000, 25_000],
      [4000, 20_000],
    ]) {
      const name = `predict dense model ${features}->${units} (${Math.round((features * units * 4) / MiB)} MiB of weights), batch 1`
      if (only && !only.test(name)) continue
      const dir = await writeModelDir(path.join(work, `dense${features}x${units}`), denseModel(features, units), [
        features,
      ])
      const m = await readModelShape(dir)
      const e = estimateInference(analyzeTopology(m.topology, m.inputShape), 1, m.params ?? undefined, undefined, true)
      const inputs: RawInputs = { kind: 'tabular', features: new Float32Array(features), rows: 1 }
      record(name, 'inference', e, await measureInference(dir, inputs), {
        model: `dense:${features}x${units}`,
        batch: 1,
      })
    }

    const ratios = cases.map((c) => c.ratio)
    if (only) return
    const file = writeResult('memory', {
      machine: `${cpus().length} cores`,
      load_average: loadavg().map((x) => Math.round(x * 100) / 100),
      backend: 'tensorflow',
      goal: 'estimate within 2x of the measured peak RSS (0.5 <= ratio <= 2)',
      met: ratios.every((r) => r >= 0.5 && r <= 2),
      min_ratio: Math.min(...ratios),
      max_ratio: Math.max(...ratios),
      cases,
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

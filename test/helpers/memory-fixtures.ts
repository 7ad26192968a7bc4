// Small real files for the memory tests and bench: image zips of any size (solid PNGs compress to almost
// nothing, which is what made the probe's 8 KB zip dangerous), tabular CSVs, and TF.js layers models
// written as plain JSON + zero weights (no TensorFlow.js needed to make them).
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import sharp from 'sharp'
import yazl from 'yazl'

const MTIME = new Date('2024-01-01T00:00:00Z')

export async function zipBuffer(entries: Record<string, Buffer>): Promise<Buffer> {
  const zip = new yazl.ZipFile()
  for (const [name, data] of Object.entries(entries)) zip.addBuffer(data, name, { mtime: MTIME })
  zip.end()
  const chunks: Buffer[] = []
  for await (const c of zip.outputStream as AsyncIterable<Buffer>) chunks.push(c)
  return Buffer.concat(chunks)
}

/** A PNG of one colour, `channels` 1 or 3. */
export function solidPng(width: number, height: number, value: number, channels: 1 | 3 = 3): Promise<Buffer> {
  return sharp(Buffer.alloc(width * height * channels, value), { raw: { width, height, channels } })
    .png()
    .toBuffer()
}

/** A zip of `count` PNGs in `classes` folders (class i is a shade apart from the others). */
export async function imageZip(count: number, width: number, height: number, classes = 2, channels: 1 | 3 = 3) {
  const entries: Record<string, Buffer> = {}
  for (let i = 0; i < count; i++) {
    const c = i % classes
    entries[`class_${c}/img_${i}.png`] = await solidPng(width, height, 30 + ((c * 180) / classes + (i % 7)), channels)
  }
  return zipBuffer(entries)
}

/** A CSV of `rows` rows of `features` numbers and a `label` column with `classes` values. */
export function tabularCsv(rows: number, features: number, classes = 3): Buffer {
  const head = [...Array.from({ length: features }, (_, j) => `f${j}`), 'label'].join(',')
  const lines = [head]
  for (let r = 0; r < rows; r++) {
    const c = r % classes
    const xs = Array.from({ length: features }, (_, j) => (c + ((r * 31 + j * 17) % 13) / 13).toFixed(3))
    lines.push([...xs, `c${c}`].join(','))
  }
  return Buffer.from(`${lines.join('\n')}\n`)
}

interface LayerSpec {
  class_name: string
  config: Record<string, unknown>
  weights?: { name: string; shape: number[] }[]
}

/** model.json + weights.bin (zeros) for a Sequential of `layers`; the first layer declares the input. */
function layersModel(inputShape: number[], layers: LayerSpec[]) {
  const specs = layers.flatMap((l) => (l.weights ?? []).map((w) => ({ ...w, dtype: 'float32' })))
  const values = specs.reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1), 0)
  layers[0].config.batch_input_shape = [null, ...inputShape]
  const modelJson = {
    format: 'layers-model',
    generatedBy: 'refit test fixture',
    convertedBy: null,
    modelTopology: {
      class_name: 'Sequential',
      config: { name: 'fixture', layers: layers.map(({ class_name, config }) => ({ class_name, config })) },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightsManifest: [{ paths: ['./weights.bin'], weights: specs }],
  }
  return { modelJson: Buffer.from(JSON.stringify(modelJson)), weights: Buffer.alloc(values * 4) }
}

/**
 * The probe's model: one 3x3 conv layer (`filters`) on `side` x `side` x 3 input, global average pooling and
 * a 2-class softmax; under a kilobyte zipped, whatever `side` is.
 */
export function convModel(side: number, filters = 8) {
  return layersModel(
    [side, side, 3],
    [
      {
        class_name: 'Conv2D',
        config: {
          name: 'conv',
          filters,
          kernel_size: [3, 3],
          strides: [1, 1],
          padding: 'same',
          activation: 'relu',
          use_bias: true,
        },
        weights: [
          { name: 'conv/kernel', shape: [3, 3, 3, filters] },
          { name: 'conv/bias', shape: [filters] },
        ],
      },
      { class_name: 'GlobalAveragePooling2D', config: { name: 'pool' } },
      {
        class_name: 'Dense',
        config: { name: 'out', units: 2, activation: 'softmax', use_bias: true },
        weights: [
          { name: 'out/kernel', shape: [filters, 2] },
          { name: 'out/bias', shape: [2] },
        ],
      },
    ],
  )
}

/** A tabular model whose weights are large: `features` -> dense `units` -> 2-class softmax. */
export function denseModel(features: number, units: number) {
  return layersModel(
    [features],
    [
      {
        class_name: 'Dense',
        config: { name: 'wide', units, activation: 'relu', use_bias: true },
        weights: [
          { name: 'wide/kernel', shape: [features, units] },
          { name: 'wide/bias', shape: [units] },
        ],
      },
      {
        class_name: 'Dense',
        config: { name: 'out', units: 2, activation: 'softmax', use_bias: true },
        weights: [
          { name: 'out/kernel', shape: [units, 2] },
          { name: 'out/bias', shape: [2] },
        ],
      },
    ],
  )
}

/** The model as an upload zip (model.json + weights.bin at the root). */
export function modelZip(m: { modelJson: Buffer; weights: Buffer }): Promise<Buffer> {
  return zipBuffer({ 'model.json': m.modelJson, 'weights.bin': m.weights })
}

/** The model as a model directory with metadata.json, as storage holds it. */
export async function writeModelDir(
  dir: string,
  m: { modelJson: Buffer; weights: Buffer },
  inputShape: number[],
  classes: string[] = ['a', 'b'],
): Promise<string> {
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'model.json'), m.modelJson)
  await writeFile(join(dir, 'weights.bin'), m.weights)
  await writeFile(
    join(dir, 'metadata.json'),
    JSON.stringify({
      input_shape: inputShape,
      preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
      classes,
      feature_layer: null,
    }),
  )
  return dir
}

/**
 * A model named in bench/results/memory.json as a directory: `mnist-cnn`, `mobilenet-v2` (materialized
 * under `work`), `conv:<side>` (the probe's one-conv model at that input size) or `dense:<features>x<units>`
 * (a model whose weights dominate, see denseModel).
 */
export async function modelRefDir(ref: string, work: string): Promise<string> {
  const { builtinModelSourceDir, ensureBuiltinModelDir } = await import('../../src/engine/builtin-models.js')
  if (ref === 'mnist-cnn') return builtinModelSourceDir('mnist-cnn')
  if (ref === 'mobilenet-v2' || ref === 'inception-v3') return ensureBuiltinModelDir(ref, join(work, 'models'))
  const dense = /^dense:(\d+)x(\d+)$/.exec(ref)
  if (dense) {
    const [features, units] = [Number(dense[1]), Number(dense[2])]
    return writeModelDir(join(work, `dense${features}x${units}`), denseModel(features, units), [features])
  }
  const side = Number(/^conv:(\d+)$/.exec(ref)?.[1])
  if (!side) throw new Error(`unknown model reference ${ref}`)
  return writeModelDir(join(work, `conv${side}`), convModel(side), [side, side, 3])
}

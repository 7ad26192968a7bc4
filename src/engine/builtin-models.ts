// Base models shipped with Refit. `mnist-cnn` is committed under src/builtin-models/ (see its README);
// `mobilenet-v2` and `inception-v3` are materialized from the MobileNetV2 and InceptionV3 layers models
// bundled in the nsfwjs npm package (dist/models/mobilenet_v2, dist/models/inception_v3).
import { existsSync } from 'node:fs'
import { copyFile, mkdir, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { METADATA_JSON, MODEL_JSON, WEIGHTS_BIN, writeDirAtomically, writeMetadata } from './model-io.js'
import type { ModelMetadata } from './protocol.js'

const require = createRequire(import.meta.url)

/** Identifier of a built-in base model. */
export type BuiltinModelId = 'mnist-cnn' | 'mobilenet-v2' | 'inception-v3'

/** A built-in base model as listed by the API. */
export interface BuiltinModel {
  id: BuiltinModelId
  description: string
  metadata: ModelMetadata
}

export const MNIST_CNN_FEATURE_LAYER = 'flatten'
export const MOBILENET_V2_FEATURE_LAYER = 'flatten_1'
/** InceptionV3's 8x8 average pool of mixed10, flattened: 2048-d. */
export const INCEPTION_V3_FEATURE_LAYER = 'flatten_1'
/** nsfwjs's output order (its NSFW_CLASSES). */
export const NSFW_CLASSES = ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy']

/** mnist-cnn's blocks for `unfreeze_top_blocks`: each conv layer is one block. */
export const MNIST_CNN_BLOCKS = [
  { name: 'conv1', layers: ['conv1'] },
  { name: 'conv2', layers: ['conv2'] },
]

const MOBILENET_BLOCK_SUFFIXES = ['expand', 'expand_BN', 'depthwise', 'depthwise_BN', 'project', 'project_BN']
/**
 * mobilenet-v2's blocks: its 16 inverted-residual groups `block_N_*` (layers with weights), bottom to top; the
 * final 1x1 conv (`Conv_1`, `Conv_1_bn`) sits between block_16 and the feature layer and belongs to the top block.
 * The stem and `expanded_conv` below block_1 are not a block: they stay frozen.
 */
export const MOBILENET_V2_BLOCKS = Array.from({ length: 16 }, (_, i) => ({
  name: `block_${i + 1}`,
  layers: [...MOBILENET_BLOCK_SUFFIXES.map((s) => `block_${i + 1}_${s}`), ...(i === 15 ? ['Conv_1', 'Conv_1_bn'] : [])],
}))

/**
 * inception-v3's blocks: its 11 Inception modules `mixed0`..`mixed10`, bottom to top, each the Conv2D and
 * BatchNormalization layers numbered as Keras's InceptionV3 numbers them (conv2d_N with batch_normalization_N;
 * nsfwjs's model keeps Keras's names). The stem (conv2d_1..5) is not a block: it stays frozen.
 */
export const INCEPTION_V3_BLOCKS = (
  [
    [6, 12],
    [13, 19],
    [20, 26],
    [27, 30],
    [31, 40],
    [41, 50],
    [51, 60],
    [61, 70],
    [71, 76],
    [77, 85],
    [86, 94],
  ] as const
).map(([first, last], i) => ({
  name: `mixed${i}`,
  layers: Array.from({ length: last - first + 1 }, (_, j) => [
    `conv2d_${first + j}`,
    `batch_normalization_${first + j}`,
  ]).flat(),
}))

export function mnistCnnMetadata(): ModelMetadata {
  return {
    input_shape: [28, 28, 1],
    preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
    classes: ['0', '1', '2', '3', '4'],
    feature_layer: MNIST_CNN_FEATURE_LAYER,
    blocks: MNIST_CNN_BLOCKS,
    description: 'Keras mnist_transfer_cnn network trained on MNIST digits 0-4; 4608-d features at `flatten`',
  }
}

export function mobilenetV2Metadata(): ModelMetadata {
  return {
    input_shape: [224, 224, 3],
    preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
    classes: [...NSFW_CLASSES],
    feature_layer: MOBILENET_V2_FEATURE_LAYER,
    blocks: MOBILENET_V2_BLOCKS,
    description:
      'MobileNetV2 (ImageNet weights) fine-tuned by nsfwjs 4.4 as a five-class NSFW classifier; 1280-d features at `flatten_1`',
  }
}

export function inceptionV3Metadata(): ModelMetadata {
  return {
    input_shape: [299, 299, 3],
    preprocessing: { scale: 1 / 255, offset: 0, resize: true, channels: 'as_model' },
    classes: [...NSFW_CLASSES],
    feature_layer: INCEPTION_V3_FEATURE_LAYER,
    blocks: INCEPTION_V3_BLOCKS,
    description:
      'InceptionV3 (ImageNet weights) fine-tuned by nsfwjs 4.4 as a five-class NSFW classifier (weights uint8-quantized by nsfwjs); 2048-d features at `flatten_1`',
  }
}

export const BUILTIN_MODELS: readonly BuiltinModel[] = [
  {
    id: 'mnist-cnn',
    description: 'Small CNN for 28x28 grayscale images (MNIST digits 0-4), 4608-d features',
    metadata: mnistCnnMetadata(),
  },
  {
    id: 'mobilenet-v2',
    description: 'MobileNetV2 224x224 RGB backbone from nsfwjs (five NSFW classes), 1280-d features',
    metadata: mobilenetV2Metadata(),
  },
  {
    id: 'inception-v3',
    description: 'InceptionV3 299x299 RGB backbone from nsfwjs (five NSFW classes), 2048-d features',
    metadata: inceptionV3Metadata(),
  },
]

export function isBuiltinModelId(id: string): id is BuiltinModelId {
  return BUILTIN_MODELS.some((m) => m.id === id)
}

/** src/builtin-models/<id>, found from src/engine (tsx) or dist/src/engine (compiled; tsc does not copy it). */
export function builtinModelSourceDir(id: BuiltinModelId): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const candidates = [
    path.join(here, '..', 'builtin-models', id),
    path.join(here, '..', '..', '..', 'src', 'builtin-models', id),
  ]
  const found = candidates.find((d) => existsSync(path.join(d, MODEL_JSON)))
  if (!found) throw new Error(`built-in model ${id} not found (looked in ${candidates.join(', ')})`)
  return found
}

function isComplete(dir: string): boolean {
  return [MODEL_JSON, WEIGHTS_BIN, METADATA_JSON].every((f) => existsSync(path.join(dir, f)))
}

/** nsfwjs's dist/models/<name>: model.min.js exports model.json, each shard `<path>.min.js` a base64 string. */
export function nsfwModelFiles(name: string): { modelJson: any; weights: Buffer } {
  const dir = path.join(path.dirname(require.resolve('nsfwjs')), '..', 'models', name)
  const modelJson = require(path.join(dir, 'model.min.js'))
  const buffers: Buffer[] = []
  for (const group of modelJson.weightsManifest) {
    for (const p of group.paths) buffers.push(Buffer.from(require(path.join(dir, `${p}.min.js`)) as string, 'base64'))
  }
  return { modelJson, weights: Buffer.concat(buffers) }
}

/**
 * Returns `modelsDir/<id>` holding model.json, weights.bin and metadata.json, creating it on first use
 * (atomically: a temp directory renamed into place, so concurrent callers never see half a model).
 */
// Concurrent first uses in one process (two prediction requests, say) share one materialization.
const materializing = new Map<string, Promise<string>>()

export async function ensureBuiltinModelDir(id: BuiltinModelId, modelsDir: string): Promise<string> {
  const target = path.join(modelsDir, id)
  if (isComplete(target)) return target
  let pending = materializing.get(target)
  if (!pending) {
    pending = materialize(id, modelsDir, target).finally(() => materializing.delete(target))
    materializing.set(target, pending)
  }
  return pending
}

/** The built-ins taken from nsfwjs: its models directory and their metadata. */
const NSFW_BUILTINS: Record<Exclude<BuiltinModelId, 'mnist-cnn'>, { dir: string; metadata: () => ModelMetadata }> = {
  'mobilenet-v2': { dir: 'mobilenet_v2', metadata: mobilenetV2Metadata },
  'inception-v3': { dir: 'inception_v3', metadata: inceptionV3Metadata },
}

async function materialize(id: BuiltinModelId, modelsDir: string, target: string): Promise<string> {
  await mkdir(modelsDir, { recursive: true })
  await writeDirAtomically(target, async (tmp) => {
    if (id === 'mnist-cnn') {
      const src = builtinModelSourceDir(id)
      for (const f of [MODEL_JSON, WEIGHTS_BIN, METADATA_JSON]) await copyFile(path.join(src, f), path.join(tmp, f))
      return
    }
    const nsfw = NSFW_BUILTINS[id]
    const { modelJson, weights } = nsfwModelFiles(nsfw.dir)
    const weightSpecs = modelJson.weightsManifest.flatMap((g: { weights: unknown[] }) => g.weights)
    const out = { ...modelJson, weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: weightSpecs }] }
    await writeFile(path.join(tmp, MODEL_JSON), JSON.stringify(out))
    await writeFile(path.join(tmp, WEIGHTS_BIN), weights)
    await writeMetadata(tmp, { ...nsfw.metadata(), source: `nsfwjs@4.4 dist/models/${nsfw.dir}` })
  })
  return target
}

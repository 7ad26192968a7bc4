// Uploading a TF.js layers model as a base model. The zip is streamed to storage, then checked as plain
// JSON and zip metadata (the API process never loads TensorFlow.js): a safe archive, a Keras layers
// topology, a weights manifest whose shards exist and whose sizes add up, and fields that agree with the
// topology. Only then are model.json, one weights.bin and metadata.json written to models/<id>/, the
// directory layout every other model has, and the rows recorded. On any fault nothing stays behind.

import { createWriteStream } from 'node:fs'
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { MultipartFile, MultipartValue } from '@fastify/multipart'
import type { FastifyInstance } from 'fastify'
import yauzl from 'yauzl'
import { isIgnoredPath, nextEntry, readZipEntry } from '../../datasets/zip.js'
import {
  type GraphModelInfo,
  type GraphModelJson,
  inspectGraphModel,
  isGraphModelProblem,
  outputOp,
} from '../../engine/graph/graph-model.js'
import type { GraphModelMeta } from '../../engine/graph/graph-transfer.js'
import { unwrapTopology } from '../../engine/memory-estimate.js'
import { MODEL_JSON, WEIGHTS_BIN, writeMetadata } from '../../engine/model-io.js'
import type { ModelMetadata } from '../../engine/protocol.js'
import { AppError, type ErrorDetail } from '../../errors.js'
import { newId } from '../../lib/ids.js'
import { assertUploadFits } from '../limits/memory-budget.js'
import { reserveUpload } from '../limits/storage-reservation.js'
import { presentModel } from './models-service.js'
import { TFJS_CLASS_NAMES } from './tfjs-classes.js'

/** Bounds on an uploaded model archive. */
export const MODEL_ZIP_LIMITS = {
  maxEntries: 1000,
  maxUncompressedBytes: 1024 ** 3,
  maxModelJsonBytes: 64 * 1024 ** 2,
} as const

const FIELDS = ['input_shape', 'preprocessing', 'classes', 'feature_layer', 'description'] as const
const LAYER_MODEL_CLASSES = ['Sequential', 'Model', 'Functional']
/** Bytes per stored value, by weight dtype or (for quantized weights) quantization dtype. */
const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, uint8: 1, bool: 1, uint16: 2, float16: 2 }
/** Layers whose output has as many units as their input: looked through to find a model's output width. */
const SAME_WIDTH_LAYERS = new Set([
  'Activation',
  'Softmax',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'PReLU',
  'ThresholdedReLU',
  'Dropout',
  'AlphaDropout',
  'GaussianDropout',
  'GaussianNoise',
  'BatchNormalization',
  'LayerNormalization',
])

const S_IFMT = 0o170000
const S_IFLNK = 0o120000

/** The validated multipart fields of a model upload. */
export interface ModelUploadFields {
  inputShape: number[]
  scale: number
  offset: number
  classes: string[] | null
  featureLayer: string | null
  description: string | null
}

/** What the JSON checks learn about an uploaded model. */
export interface InspectedModel {
  /** folder of model.json inside the zip: '' or 'name/' */
  folder: string
  modelJson: Record<string, unknown>
  /** zip entry names of the weight shards, in manifest order */
  shards: string[]
  weightSpecs: Record<string, unknown>[]
  weightBytes: number
  /** input layer shape without the batch dimension; null where any size is accepted */
  inputShape: (number | null)[]
  /** units of the output layer; null when the topology does not say */
  outputUnits: number | null
  outputLayer: string
  layerNames: string[]
  /** a TF.js graph model (GraphDef topology): its input, output, default feature node and node names */
  graph?: GraphModelInfo & { nodeNames: Set<string> }
}

const invalidModel = (message: string, details: ErrorDetail[]) => new AppError('invalid_model', message, { details })

const invalidField = (field: string, message: string, expected: string, found: unknown) =>
  new AppError('invalid_field', message, {
    param: field,
    details: [{ field, message: `expected ${expected}, found ${describe(found)}` }],
  })

function describe(v: unknown): string {
  const s = JSON.stringify(v)
  if (s === undefined) return String(v)
  return s.length > 120 ? `${s.slice(0, 117)}...` : s
}

function parseJsonField(name: string, raw: string, expected: string): unknown {
  try {
    return JSON.parse(raw)
  } catch {
    throw invalidField(name, `${name} must be JSON: ${expected}.`, `JSON ${expected}`, raw)
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** Checks the text fields on their own; how they agree with the model is checked later. */
export function parseUploadFields(fields: Record<string, string>): ModelUploadFields {
  for (const name of Object.keys(fields))
    if (!(FIELDS as readonly string[]).includes(name))
      throw invalidField(name, `Unknown multipart field "${name}".`, `one of ${FIELDS.join(', ')}, file`, name)

  if (fields.input_shape === undefined)
    throw invalidField('input_shape', 'input_shape is required.', 'a JSON array of positive integers', null)
  const shapeWanted = 'a JSON array of 1 to 4 positive integers without the batch dimension, e.g. [28,28,1]'
  const inputShape = parseJsonField('input_shape', fields.input_shape, shapeWanted)
  if (
    !Array.isArray(inputShape) ||
    inputShape.length < 1 ||
    inputShape.length > 4 ||
    !inputShape.every((d) => Number.isSafeInteger(d) && d > 0)
  )
    throw invalidField('input_shape', `input_shape must be ${shapeWanted}.`, shapeWanted, inputShape)

  let scale = 1
  let offset = 0
  if (fields.preprocessing !== undefined && fields.preprocessing !== '') {
    const wanted = 'a JSON object {"scale": number, "offset": number}'
    const p = parseJsonField('preprocessing', fields.preprocessing, wanted)
    if (!isRecord(p) || Object.keys(p).some((k) => k !== 'scale' && k !== 'offset'))
      throw invalidField('preprocessing', `preprocessing must be ${wanted}.`, wanted, p)
    for (const k of ['scale', 'offset'] as const)
      if (p[k] !== undefined && (typeof p[k] !== 'number' || !Number.isFinite(p[k])))
        throw invalidField(`preprocessing.${k}`, `preprocessing.${k} must be a finite number.`, 'a number', p[k])
    scale = (p.scale as number | undefined) ?? 1
    offset = (p.offset as number | undefined) ?? 0
    if (scale === 0) throw invalidField('preprocessing.scale', 'preprocessing.scale must not be 0.', 'non-zero', 0)
  }

  let classes: string[] | null = null
  if (fields.classes !== undefined && fields.classes !== '') {
    const wanted = 'a JSON array of distinct non-empty strings'
    const c = parseJsonField('classes', fields.classes, wanted)
    if (
      !Array.isArray(c) ||
      c.length === 0 ||
      !c.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 200) ||
      new Set(c).size !== c.length
    )
      throw invalidField('classes', `classes must be ${wanted}.`, wanted, c)
    classes = c as string[]
  }

  const featureLayer = fields.feature_layer || null
  if (featureLayer !== null && featureLayer.length > 200)
    throw invalidField('feature_layer', 'feature_layer is too long.', 'a layer name', featureLayer)
  const description = fields.description || null
  if (description !== null && description.length > 2000)
    throw invalidField('description', 'description is too long.', 'at most 2000 characters', description.length)

  return { inputShape: inputShape as number[], scale, offset, classes, featureLayer, description }
}

/**
 * Opens the uploaded zip and lists its regular files, refusing entries that could escape a directory
 * (absolute, `..`, backslashes, symlinks) and archives too large to unpack. The caller closes the zip.
 */
export async function openModelZip(absPath: string): Promise<{ zip: yauzl.ZipFile; files: Map<string, yauzl.Entry> }> {
  let zip: yauzl.ZipFile
  try {
    zip = await yauzl.openPromise(absPath, {
      lazyEntries: true,
      autoClose: false,
      decodeStrings: false,
      validateEntrySizes: true,
    })
  } catch (e) {
    throw invalidModel('The file is not a readable zip archive.', [
      { field: 'file', message: `expected a zip archive, found unreadable data (${(e as Error).message})` },
    ])
  }
  try {
    if (zip.entryCount > MODEL_ZIP_LIMITS.maxEntries)
      throw invalidModel(`The zip holds too many entries.`, [
        {
          field: 'file',
          message: `expected at most ${MODEL_ZIP_LIMITS.maxEntries} entries, found ${zip.entryCount}`,
        },
      ])
    const files = new Map<string, yauzl.Entry>()
    let total = 0
    for (;;) {
      let entry: yauzl.Entry | undefined
      try {
        entry = await nextEntry(zip)
      } catch (e) {
        throw invalidModel('The zip archive is damaged.', [{ field: 'file', message: (e as Error).message }])
      }
      if (!entry) break
      const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true)
      const unsafe = yauzl.validateFileName(name) ?? (name.includes('\0') ? 'NUL byte in name' : null)
      if (unsafe)
        throw invalidModel('The zip holds an unsafe entry name.', [
          { entry: name, message: `expected a relative path inside the archive, found ${unsafe.split(':')[0]}` },
        ])
      if (((entry.externalFileAttributes >>> 16) & S_IFMT) === S_IFLNK)
        throw invalidModel('The zip holds a symbolic link.', [
          { entry: name, message: 'expected a regular file, found a symbolic link' },
        ])
      if (name.endsWith('/') || isIgnoredPath(name)) continue
      if (entry.isEncrypted())
        throw invalidModel('The zip holds an encrypted entry.', [
          { entry: name, message: 'expected an unencrypted file, found an encrypted one' },
        ])
      if (files.has(name))
        throw invalidModel('The zip holds the same path twice.', [
          { entry: name, message: 'expected one entry per path, found a duplicate' },
        ])
      total += entry.uncompressedSize
      if (total > MODEL_ZIP_LIMITS.maxUncompressedBytes)
        throw invalidModel('The zip uncompresses to too many bytes.', [
          {
            entry: name,
            message: `expected at most ${MODEL_ZIP_LIMITS.maxUncompressedBytes} bytes in all, passed here`,
          },
        ])
      files.set(name, entry)
    }
    return { zip, files }
  } catch (e) {
    zip.close()
    throw e
  }
}

/** Where model.json is: at the root or directly under one folder, and only once. */
export function findModelJson(names: Iterable<string>): string {
  const found = [...names].filter((n) => {
    const parts = n.split('/')
    return parts[parts.length - 1] === MODEL_JSON && parts.length <= 2
  })
  if (found.length === 0)
    throw invalidModel('The zip holds no model.json.', [
      { entry: MODEL_JSON, message: 'expected model.json at the zip root or in one folder, found none' },
    ])
  if (found.length > 1)
    throw invalidModel('The zip holds more than one model.json.', [
      { entry: found.join(', '), message: `expected one model.json, found ${found.length}` },
    ])
  return found[0]
}

type LayerJson = { class_name?: unknown; name?: unknown; config?: Record<string, unknown>; inbound_nodes?: unknown }

const layerName = (l: LayerJson): string | null =>
  typeof l.name === 'string' ? l.name : typeof l.config?.name === 'string' ? l.config.name : null

/** The batch shape a layer declares (Keras 2 `batch_input_shape`, Keras 3 `batch_shape`). */
function declaredBatchShape(l: LayerJson | undefined): unknown {
  return l?.config?.batch_input_shape ?? l?.config?.batch_shape
}

/** The first inbound layer of a functional-model layer (Keras 2 node format), if it has exactly one. */
function inboundLayer(l: LayerJson): string | null {
  const nodes = l.inbound_nodes
  if (!Array.isArray(nodes) || nodes.length !== 1 || !Array.isArray(nodes[0]) || nodes[0].length !== 1) return null
  const first = nodes[0][0]
  return Array.isArray(first) && typeof first[0] === 'string' ? first[0] : null
}

/** Checks model.json as JSON: a Keras layers topology with one input and output, and a sound weights manifest. */
export function inspectModelJson(
  modelJsonEntry: string,
  text: string,
  files: Map<string, { uncompressedSize: number }>,
): InspectedModel {
  const at = (message: string, detail: string) => invalidModel(message, [{ entry: modelJsonEntry, message: detail }])
  const folder = modelJsonEntry.slice(0, modelJsonEntry.length - MODEL_JSON.length)
  let modelJson: unknown
  try {
    modelJson = JSON.parse(text)
  } catch (e) {
    throw at('model.json is not valid JSON.', `expected JSON, found a parse error (${(e as Error).message})`)
  }
  if (!isRecord(modelJson))
    throw at('model.json is not a JSON object.', `expected an object, found ${describe(modelJson)}`)
  const graphTopology = isRecord(modelJson.modelTopology) && Array.isArray(modelJson.modelTopology.node)
  if (modelJson.format === 'graph-model' || (modelJson.format === undefined && graphTopology))
    return inspectGraphModelJson(modelJsonEntry, folder, modelJson, files)
  if (modelJson.format !== undefined && modelJson.format !== 'layers-model')
    throw at(
      'model.json is neither a TF.js layers model nor a graph model.',
      `expected format "layers-model" or "graph-model", found ${describe(modelJson.format)}`,
    )
  // Keras-converted files may wrap the topology in `model_config`.
  const rawTopology = modelJson.modelTopology
  const topology = isRecord(rawTopology) && isRecord(rawTopology.model_config) ? rawTopology.model_config : rawTopology
  if (!isRecord(topology) || !LAYER_MODEL_CLASSES.includes(topology.class_name as string))
    throw at(
      'model.json is not a Keras layers model.',
      `expected modelTopology.class_name ${LAYER_MODEL_CLASSES.join(', ')}, found ${describe(isRecord(topology) ? topology.class_name : topology)}`,
    )
  const config = topology.config
  const layersRaw = Array.isArray(config) ? config : isRecord(config) ? config.layers : undefined
  if (!Array.isArray(layersRaw) || layersRaw.length === 0 || !layersRaw.every(isRecord))
    throw at('model.json has no layers.', 'expected modelTopology.config.layers to be a non-empty array of layers')
  const layers = layersRaw as LayerJson[]
  const byName = new Map<string, LayerJson>()
  for (const [i, l] of layers.entries()) {
    const name = layerName(l)
    if (name === null) throw at('model.json has a layer without a name.', `expected a name on layer ${i}, found none`)
    // A class TF.js does not know fails at the first load, in a worker, long after the upload was accepted.
    for (let wrapped: unknown = l; isRecord(wrapped); wrapped = (wrapped.config as Record<string, unknown>)?.layer)
      if (!TFJS_CLASS_NAMES.has(wrapped.class_name as string))
        throw at(
          `model.json has a layer of class ${describe(wrapped.class_name)}, which TF.js does not know.`,
          `expected a TF.js layer class (Dense, Conv2D, ...) on layer ${name}, found ${describe(wrapped.class_name)}; custom layers cannot be loaded`,
        )
    byName.set(name, l)
  }

  let inputLayer: LayerJson | undefined
  let outputName: string
  if (topology.class_name === 'Sequential') {
    inputLayer = layers[0]
    outputName = layerName(layers[layers.length - 1])!
  } else {
    const cfg = config as Record<string, unknown>
    const ins = cfg.input_layers
    const outs = cfg.output_layers
    if (!Array.isArray(ins) || ins.length !== 1 || !Array.isArray(outs) || outs.length !== 1)
      throw at(
        'The model must have one input and one output.',
        `expected one input and one output layer, found ${Array.isArray(ins) ? ins.length : 0} and ${Array.isArray(outs) ? outs.length : 0}`,
      )
    inputLayer = byName.get((ins[0] as unknown[])?.[0] as string)
    outputName = (outs[0] as unknown[])?.[0] as string
    if (!byName.has(outputName))
      throw at('model.json names an unknown output layer.', `expected a layer named ${describe(outputName)}`)
  }
  const batchShape = declaredBatchShape(inputLayer)
  if (
    !Array.isArray(batchShape) ||
    batchShape.length < 2 ||
    !batchShape.every((d) => d === null || (Number.isSafeInteger(d) && d > 0))
  )
    throw at(
      "model.json does not declare the model's input shape.",
      `expected batch_input_shape like [null, ...dims] on the input layer, found ${describe(batchShape)}`,
    )

  // Look through same-width layers (activations, dropout, normalization) back to the Dense layer.
  let outputUnits: number | null = null
  let cursor: LayerJson | undefined = byName.get(outputName)
  let index = layers.length - 1
  while (cursor) {
    if (cursor.class_name === 'Dense' && Number.isSafeInteger(cursor.config?.units)) {
      outputUnits = cursor.config!.units as number
      break
    }
    if (!SAME_WIDTH_LAYERS.has(cursor.class_name as string)) break
    if (topology.class_name === 'Sequential') cursor = layers[--index]
    else {
      const prev = inboundLayer(cursor)
      cursor = prev === null ? undefined : byName.get(prev)
    }
  }

  const { shards, weightSpecs, weightBytes } = inspectManifest(at, folder, modelJson, files)

  return {
    folder,
    modelJson,
    shards,
    weightSpecs,
    weightBytes,
    inputShape: batchShape.slice(1) as (number | null)[],
    outputUnits,
    outputLayer: outputName,
    layerNames: [...byName.keys()],
  }
}

/** Checks the weights manifest: shard paths inside the model folder and present, sizes adding up. */
function inspectManifest(
  at: (message: string, detail: string) => AppError,
  folder: string,
  modelJson: Record<string, unknown>,
  files: Map<string, { uncompressedSize: number }>,
): { shards: string[]; weightSpecs: Record<string, unknown>[]; weightBytes: number } {
  const manifest = modelJson.weightsManifest
  if (!Array.isArray(manifest) || !manifest.every(isRecord))
    throw at('model.json has no weights manifest.', 'expected weightsManifest to be an array of {paths, weights}')
  const shards: string[] = []
  const weightSpecs: Record<string, unknown>[] = []
  let weightBytes = 0
  for (const [g, group] of manifest.entries()) {
    if (!Array.isArray(group.paths) || !Array.isArray(group.weights))
      throw at(
        'model.json has a malformed weights manifest.',
        `expected weightsManifest[${g}] to have paths and weights`,
      )
    for (const p of group.paths) {
      if (typeof p !== 'string' || p === '')
        throw at('model.json has a malformed weights path.', `expected weightsManifest[${g}].paths to be file names`)
      const target = path.posix.normalize(`${folder}${p}`)
      if (
        p.startsWith('/') ||
        p.includes('\\') ||
        /^[a-z][a-z0-9+.-]*:/i.test(p) ||
        target.startsWith('../') ||
        target === '..' ||
        !target.startsWith(folder)
      )
        throw invalidModel('A weights path leaves the model folder.', [
          {
            entry: p,
            message: `expected a path inside ${folder ? `the folder ${folder}` : 'the zip root'} (next to model.json), found one outside it`,
          },
        ])
      if (!files.has(target))
        throw invalidModel('A weights file listed in model.json is missing from the zip.', [
          { entry: target, message: `expected the shard weightsManifest[${g}] lists, found no such entry` },
        ])
      if (shards.includes(target))
        throw invalidModel('model.json lists a weights file twice.', [
          { entry: target, message: 'expected each shard once in weightsManifest, found it again' },
        ])
      shards.push(target)
    }
    for (const [w, spec] of group.weights.entries()) {
      const where = `weightsManifest[${g}].weights[${w}]`
      if (!isRecord(spec) || typeof spec.name !== 'string' || !Array.isArray(spec.shape))
        throw at('model.json has a malformed weight spec.', `expected ${where} to be {name, shape, dtype}`)
      if (!spec.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
        throw at(
          'model.json has a malformed weight shape.',
          `expected ${where}.shape to be sizes, found ${describe(spec.shape)}`,
        )
      const quantization = isRecord(spec.quantization) ? spec.quantization : null
      const dtype = (quantization ? quantization.dtype : spec.dtype) as string
      const size = DTYPE_BYTES[dtype]
      if (size === undefined)
        throw at(
          'model.json has a weight of an unsupported dtype.',
          `expected ${where} dtype float32, int32, bool or uint8 (quantized uint8, uint16, float16), found ${describe(dtype)} for ${spec.name}`,
        )
      weightBytes += (spec.shape as number[]).reduce((a, b) => a * b, 1) * size
      weightSpecs.push(spec)
    }
  }
  const found = shards.reduce((sum, s) => sum + files.get(s)!.uncompressedSize, 0)
  if (found !== weightBytes)
    throw invalidModel("The weight files do not match model.json's manifest.", [
      {
        entry: shards.join(', ') || 'weightsManifest',
        message: `expected ${weightBytes} bytes (shape × dtype size over ${weightSpecs.length} weights), found ${found}`,
      },
    ])

  return { shards, weightSpecs, weightBytes }
}

/**
 * Checks a TF.js graph model (GraphDef `modelTopology`, what tensorflowjs_converter writes) as JSON: one
 * Placeholder input, one output, ops the graph path can run (graph-model.ts rewrites TF.js's fused forms;
 * any other fused form is refused naming its node and op), and a sound weights manifest.
 */
function inspectGraphModelJson(
  modelJsonEntry: string,
  folder: string,
  modelJson: Record<string, unknown>,
  files: Map<string, { uncompressedSize: number }>,
): InspectedModel {
  const at = (message: string, detail: string) => invalidModel(message, [{ entry: modelJsonEntry, message: detail }])
  const topology = modelJson.modelTopology as Record<string, unknown> | undefined
  const nodes = topology?.node
  if (!Array.isArray(nodes) || nodes.length === 0)
    throw at(
      'model.json says graph-model but holds no GraphDef.',
      'expected modelTopology.node to be a non-empty array of GraphDef nodes (what tensorflowjs_converter writes)',
    )
  if (!nodes.every((n) => isRecord(n) && typeof n.name === 'string' && typeof n.op === 'string'))
    throw at('model.json has a malformed graph.', 'expected modelTopology.node to be GraphDef nodes {name, op, input}')
  const info = inspectGraphModel(modelJson as unknown as GraphModelJson)
  if (isGraphModelProblem(info))
    throw new AppError(
      'graph_model_op_unsupported',
      `The graph model cannot run here${info.node ? `: node "${info.node}"${info.op ? ` (op ${info.op})` : ''}` : info.op ? ` (op ${info.op})` : ''}: ${info.reason}.`,
      {
        param: 'file',
        details: [
          {
            entry: modelJsonEntry,
            message: `${info.node ? `node "${info.node}"` : 'graph'}${info.op ? ` (op ${info.op})` : ''}: ${info.reason}`,
          },
        ],
      },
    )
  const { shards, weightSpecs, weightBytes } = inspectManifest(at, folder, modelJson, files)
  const nodeNames = new Set((nodes as { name: string }[]).map((n) => n.name))
  return {
    folder,
    modelJson,
    shards,
    weightSpecs,
    weightBytes,
    inputShape: info.input.shape.map((d) => (d > 0 ? d : null)),
    outputUnits: null,
    outputLayer: info.output,
    layerNames: [],
    graph: { ...info, nodeNames },
  }
}

/** Checks that the fields describe this model: its input shape, its output width, one of its layers. */
export function checkFieldsAgainstModel(fields: ModelUploadFields, model: InspectedModel): void {
  if (model.graph) {
    checkFieldsAgainstGraph(fields, model.graph)
    return
  }
  const modelShape = model.inputShape
  if (
    modelShape.length !== fields.inputShape.length ||
    !modelShape.every((d, i) => d === null || d === fields.inputShape[i])
  )
    throw invalidField(
      'input_shape',
      "input_shape does not match the model's input layer.",
      `${describe(modelShape)} (the input layer's batch_input_shape without the batch dimension; null is any size)`,
      fields.inputShape,
    )
  if (fields.classes) {
    if (model.outputUnits === null)
      throw invalidField(
        'classes',
        'The number of output units cannot be read from the topology, so classes cannot be checked.',
        `a model whose output layer "${model.outputLayer}" is (or follows) a Dense layer`,
        fields.classes.length,
      )
    if (fields.classes.length !== model.outputUnits)
      throw invalidField(
        'classes',
        'classes does not have one name per output unit of the model.',
        `${model.outputUnits} class names (units of the output layer "${model.outputLayer}")`,
        `${fields.classes.length} class names`,
      )
  }
  if (fields.featureLayer !== null && !model.layerNames.includes(fields.featureLayer))
    throw invalidField(
      'feature_layer',
      `The model has no layer named "${fields.featureLayer}".`,
      `one of ${model.layerNames.slice(0, 30).join(', ')}${model.layerNames.length > 30 ? ', ...' : ''}`,
      fields.featureLayer,
    )
}

/** A graph model: input_shape equals the Placeholder's, the feature node (given or default) exists. */
function checkFieldsAgainstGraph(fields: ModelUploadFields, graph: NonNullable<InspectedModel['graph']>): void {
  const placeholder = graph.input.shape
  if (
    placeholder.length !== fields.inputShape.length ||
    !placeholder.every((d, i) => d <= 0 || d === fields.inputShape[i])
  )
    throw invalidField(
      'input_shape',
      `input_shape ${describe(fields.inputShape)} does not match the graph model's Placeholder "${graph.input.name}" ${describe(placeholder)}.`,
      `${describe(placeholder)} (the Placeholder's shape without the batch dimension; -1 is any size)`,
      fields.inputShape,
    )
  const node = fields.featureLayer ?? graph.featureNode
  if (node === null)
    throw new AppError(
      'graph_model_feature_node_not_found',
      'The graph model has no MatMul, so it has no default feature node: name one in feature_layer.',
      {
        param: 'feature_layer',
        details: [{ field: 'feature_layer', message: 'expected a node name of the graph, found none given' }],
      },
    )
  if (!graph.nodeNames.has(node))
    throw new AppError('graph_model_feature_node_not_found', `The graph model has no node named "${node}".`, {
      param: 'feature_layer',
      details: [
        {
          field: 'feature_layer',
          message: `expected a node of the graph${graph.featureNode ? ` (default: the input of the last MatMul, "${graph.featureNode}")` : ''}, found ${describe(node)}`,
        },
      ],
    })
}

/** Writes model.json (manifest rewritten to one weights.bin), weights.bin (the shards in manifest order) and metadata.json. */
async function writeModelDir(
  zip: yauzl.ZipFile,
  files: Map<string, yauzl.Entry>,
  model: InspectedModel,
  metadata: ModelMetadata,
  dir: string,
): Promise<void> {
  await mkdir(dir, { recursive: true })
  let written = 0
  async function* shardBytes() {
    for (const shard of model.shards) {
      const stream = await zip.openReadStreamPromise(files.get(shard)!)
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        written += chunk.length
        yield chunk
      }
    }
  }
  await pipeline(shardBytes, createWriteStream(path.join(dir, WEIGHTS_BIN), { flags: 'wx' }))
  if (written !== model.weightBytes)
    throw invalidModel("The weight files do not match model.json's manifest.", [
      { entry: model.shards.join(', '), message: `expected ${model.weightBytes} bytes, found ${written}` },
    ])
  const modelJson = {
    ...model.modelJson,
    weightsManifest: [{ paths: [`./${WEIGHTS_BIN}`], weights: model.weightSpecs }],
  }
  await writeFile(path.join(dir, MODEL_JSON), JSON.stringify(modelJson))
  await writeMetadata(dir, metadata)
}

/** Bytes of the files directly in `dir` (a model directory is flat: model.json, shards, metadata.json). */
async function dirBytes(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true }))
    if (e.isFile()) n += (await stat(path.join(dir, e.name))).size
  return n
}

/**
 * Streams a multipart model upload to storage, checks it, and registers it as an `uploaded` model of the
 * project. Fields may come before or after the file part. Answers the model object.
 */
export async function uploadModel(
  app: FastifyInstance,
  projectId: string,
  parts: AsyncIterableIterator<MultipartFile | MultipartValue>,
  contentLength?: number,
) {
  const storage = app.storage
  // the zip counts against the quota while it is read, the unpacked model once it is placed
  const reservation = await reserveUpload(app, projectId, contentLength)
  const id = newId('model')
  const zipKey = `tmp/upload-${id}.zip`
  const modelKey = `models/${id}`
  const workDir = storage.tmpPath()
  const fields: Record<string, string> = {}
  let stored = false
  let zip: yauzl.ZipFile | null = null
  let placed = false
  try {
    for await (const part of parts) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file' || stored) {
          part.file.resume()
          throw new AppError('invalid_request', 'Send exactly one file, in the multipart field `file`.', {
            param: part.fieldname,
          })
        }
        stored = true
        await storage.writeStream(zipKey, reservation.through(part.file))
        if (part.file.truncated) throw new AppError('file_too_large', 'The file is larger than the upload limit.')
      } else {
        fields[part.fieldname] = String(part.value)
      }
    }
    if (!stored) throw new AppError('missing_file', 'The multipart body has no `file` part.', { param: 'file' })
    const parsed = parseUploadFields(fields)

    const opened = await openModelZip(await storage.localPath(zipKey))
    zip = opened.zip
    const modelJsonEntry = findModelJson(opened.files.keys())
    const entry = opened.files.get(modelJsonEntry)!
    if (entry.uncompressedSize > MODEL_ZIP_LIMITS.maxModelJsonBytes)
      throw invalidModel('model.json is too large.', [
        {
          entry: modelJsonEntry,
          message: `expected at most ${MODEL_ZIP_LIMITS.maxModelJsonBytes} bytes, found ${entry.uncompressedSize}`,
        },
      ])
    let text: string
    try {
      text = (await readZipEntry(zip, entry)).toString('utf8')
    } catch (e) {
      throw invalidModel('model.json cannot be read from the zip.', [
        { entry: modelJsonEntry, message: `expected a readable entry, found ${(e as Error).message}` },
      ])
    }
    const model = inspectModelJson(modelJsonEntry, text, opened.files)
    checkFieldsAgainstModel(parsed, model)
    // one input must fit in an inference process, or the model could never answer (a graph model's GraphDef is
    // walked node by node: engine/graph/graph-memory.ts)
    assertUploadFits(
      app.config,
      unwrapTopology(model.modelJson.modelTopology),
      parsed.inputShape,
      model.weightSpecs.reduce((n, w) => n + (w.shape as number[]).reduce((a, b) => a * b, 1), 0),
    )

    const metadata: ModelMetadata = {
      input_shape: parsed.inputShape,
      preprocessing: { scale: parsed.scale, offset: parsed.offset, resize: true, channels: 'as_model' },
      classes: parsed.classes,
      feature_layer: model.graph ? (parsed.featureLayer ?? model.graph.featureNode) : parsed.featureLayer,
      ...(parsed.description !== null ? { description: parsed.description } : {}),
      ...(model.graph
        ? {
            // a frozen backbone: transfer jobs run it as a TensorFlow graph (src/engine/graph/graph-transfer.ts)
            graph_model: {
              format: 'tfjs-graph-model',
              input: model.graph.input.name,
              output: model.graph.output,
              // checkFieldsAgainstGraph refused a graph without one
              feature_node: (parsed.featureLayer ?? model.graph.featureNode)!,
              // a Softmax output is class probabilities: such a graph model can teach (jobs/methods.ts)
              output_op: outputOp(model.modelJson as unknown as GraphModelJson, model.graph.output),
            } satisfies GraphModelMeta,
          }
        : {}),
    }
    // the weights are reserved before they are unpacked (a small zip may inflate to its whole manifest)
    const declared = model.weightBytes + Buffer.byteLength(text)
    if (declared > reservation.reserved) await reservation.reserve(declared - reservation.reserved, 'This model')
    try {
      await writeModelDir(zip, opened.files, model, metadata, workDir)
    } catch (e) {
      if (e instanceof AppError) throw e
      // A shard whose bytes do not inflate to its declared size, or a damaged archive.
      throw invalidModel('A weights file cannot be read from the zip.', [
        { entry: model.shards.join(', '), message: `expected readable data, found ${(e as Error).message}` },
      ])
    }
    zip.close()
    zip = null
    // The unpacked model may be larger than its zip: reserve the difference before it is placed.
    const unpacked = await dirBytes(workDir)
    if (unpacked > reservation.reserved) await reservation.reserve(unpacked - reservation.reserved, 'This model')
    // Files first, then the rows that point at them.
    placed = true
    const digest = await storage.putDir(modelKey, workDir)
    const row = await app.db.$transaction(async (tx) => {
      const artifactId = newId('art')
      await tx.artifact.create({
        data: {
          id: artifactId,
          projectId,
          kind: 'model',
          path: modelKey,
          sha256: digest.sha256,
          bytes: BigInt(digest.bytes),
        },
      })
      return tx.model.create({
        data: {
          id,
          projectId,
          kind: 'uploaded',
          description: parsed.description,
          artifactId,
          metadata: metadata as object,
        },
        include: { artifact: true },
      })
    })
    return presentModel(row)
  } catch (err) {
    if (placed) await storage.remove(modelKey)
    throw err
  } finally {
    zip?.close()
    await rm(workDir, { recursive: true, force: true })
    await storage.remove(zipKey)
    await reservation.release()
  }
}

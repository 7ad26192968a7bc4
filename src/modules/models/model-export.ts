// Downloads in TensorFlow's own formats: `GET /v1/models/{id}/content?format=saved_model` (and the admin twin).
import { readFile } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import yazl from 'yazl'
import type { Artifact, Model } from '../../generated/prisma/client.js'
import { assertPredictionFits } from '../limits/memory-budget.js'
import { modelCacheKey, modelDir, modelZip, predictableSpec } from './models-service.js'

type ModelRow = Model & { artifact?: Artifact | null }

/** Deadline of a model download's handler (the compile of a SavedModel export; the zip then streams freely). */
export const EXPORT_TIMEOUT_MS = 10 * 60_000

/** What `GET /v1/models/{id}/content?format=` serves: TF.js layers files (default) or a frozen SavedModel. */
export type ModelDownloadFormat = 'tfjs_layers' | 'saved_model'

/**
 * The whole model compiled into a frozen SavedModel by an inference process (it holds TensorFlow.js), zipped
 * with an empty variables/ (the weights are Const nodes) and metadata.json: the model's own metadata plus a
 * `saved_model` block naming the `serving_default` signature's input and output. 409 `model_not_freezable`
 * when a layer has no graph translation.
 */
export async function savedModelZip(app: FastifyInstance, m: ModelRow) {
  predictableSpec(m)
  // the export loads the model in an inference process as a one-input prediction would
  await assertPredictionFits(app, m, 1)
  const dir = await modelDir(app.storage, m)
  const out = await app.inference.exportSavedModel({ key: modelCacheKey(m), dir })
  const metadata = JSON.parse(await readFile(`${dir}/metadata.json`, 'utf8')) as Record<string, unknown>
  const zip = new yazl.ZipFile()
  zip.addBuffer(
    Buffer.from(out.savedModel.buffer, out.savedModel.byteOffset, out.savedModel.byteLength),
    'saved_model.pb',
  )
  zip.addEmptyDirectory('variables')
  zip.addBuffer(
    Buffer.from(`${JSON.stringify({ ...metadata, saved_model: out.saved_model }, null, 2)}\n`),
    'metadata.json',
  )
  zip.end()
  return zip.outputStream as unknown as Readable
}

/** The zip `format` asks for; the default is the TF.js layers files. */
export function modelDownload(app: FastifyInstance, m: ModelRow, format: ModelDownloadFormat = 'tfjs_layers') {
  return format === 'saved_model' ? savedModelZip(app, m) : modelZip(app, m)
}

// Predictions: the request is parsed and checked here against the model's input shape, then handed to the
// inference pool (TensorFlow.js runs only in its child processes), and the probabilities become top-k classes.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../../errors.js'
import {
  MAX_IMAGE_BYTES,
  MAX_INPUTS,
  type ParsedInputs,
  parseJsonInputs,
  parseMultipartInputs,
  topClasses,
} from '../../inference/inputs.js'
import { assertPredictionFits } from '../limits/memory-budget.js'
import { getModel, modelCacheKey, modelDir, predictableSpec } from './models-service.js'

type ModelRow = Parameters<typeof modelCacheKey>[0]

/** Per app: admitted (model weights key, input count) pairs, with the model's directory; bounded, oldest out first. */
const admissionsOf = new WeakMap<FastifyInstance, Map<string, Promise<string>>>()
const MAX_ADMISSIONS = 4096

/**
 * The memory check (assertPredictionFits) and the model's local directory, once per (weights, input count)
 * in this process rather than per request: both depend on nothing else (the limit is fixed at boot), and the
 * topology walk and the directory's file checks were about 7% of the API's CPU on mnist-cnn. Refusals and
 * errors are not kept. The inference process loads from the directory only when it does not hold the model.
 */
function admitted(app: FastifyInstance, model: ModelRow, rows: number): Promise<string> {
  let admissions = admissionsOf.get(app)
  if (!admissions) {
    admissions = new Map()
    admissionsOf.set(app, admissions)
  }
  const key = `${modelCacheKey(model)}:${rows}`
  let entry = admissions.get(key)
  if (!entry) {
    entry = assertPredictionFits(app, model, rows).then(() => modelDir(app.storage, model))
    admissions.set(key, entry)
    const all = admissions
    entry.catch(() => all.delete(key))
    if (admissions.size > MAX_ADMISSIONS) admissions.delete(admissions.keys().next().value!)
  }
  return entry
}

export async function predict(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  projectId: string,
  id: string,
) {
  // the model row from this process's lookup cache (dropped by a delete in any API process)
  const model = await app.lookups.get(req, `model:${projectId}:${id}`, () => getModel(app.db, projectId, id))
  const { inputShape, classes } = predictableSpec(model)
  const spec = { inputShape, classes: classes.length }
  let parsed: ParsedInputs
  if (req.isMultipart()) {
    const parts = req.parts({
      limits: { fileSize: MAX_IMAGE_BYTES, files: MAX_INPUTS + 1, fields: 4, parts: MAX_INPUTS + 5 },
    })
    parsed = await parseMultipartInputs(parts, spec)
  } else {
    parsed = parseJsonInputs(req.body, spec)
  }
  const rows = parsed.inputs.kind === 'image' ? parsed.inputs.images.length : parsed.inputs.rows
  // refused here, before an inference process spends it
  const dir = await admitted(app, model, rows)
  const sent = performance.now()
  const out = await app.inference.predict({ key: modelCacheKey(model), dir }, parsed.inputs, {
    timeoutMs: app.config.requestTimeoutMs,
  })
  if (out.classes !== classes.length)
    throw new AppError(
      'model_not_predictable',
      `${model.id} has ${out.classes} outputs but ${classes.length} class names; they must match.`,
      { param: 'id' },
    )
  // Where the time went (W3C Server-Timing, shown by browsers' devtools and read by bench/inference.ts):
  // `forward` = decoding, preprocessing and the model in the inference process; `pool` = the round trip to
  // it, queueing and IPC included; the rest of a request's time is the API's own.
  reply.header(
    'server-timing',
    `forward;dur=${out.ms};desc="${out.forward}", pool;dur=${(performance.now() - sent).toFixed(1)}`,
  )
  return {
    object: 'list' as const,
    data: topClasses(out.probs, rows, classes, parsed.topK),
    model: model.id,
    backend: out.backend,
    forward: out.forward,
  }
}

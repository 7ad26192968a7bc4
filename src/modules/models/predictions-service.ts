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
  await assertPredictionFits(app, model, rows)
  const dir = await modelDir(app.storage, model)
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

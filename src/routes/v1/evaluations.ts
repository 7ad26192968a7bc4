import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { createEvaluation, getEvaluation, listEvaluations } from '../../modules/models/evaluations-service.js'
import { CreateEvaluationBody, EvaluationObject, ModelEvalParams } from '../../modules/models/model-schemas.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../schemas/common.js'
import { evaluationExample, jsonResponse, listExample } from '../../schemas/examples.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/models/:id/evaluations',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'createModelEvaluation',
        summary: 'Score a model on a labelled file: loss, accuracy, per-class precision/recall, confusion matrix',
        description:
          "Runs as a queued job on the worker; poll the evaluation until `status` is `succeeded` or `failed`. The file must be processed, of the model's input kind and shape, and hold only classes the model predicts (else 400 `incompatible_dataset` or `file_not_ready`).",
        params: IdParams,
        body: CreateEvaluationBody,
        response: {
          201: jsonResponse(Type.Ref('ModelEvaluation'), {
            ...evaluationExample,
            status: 'queued',
            finished_at: null,
            backend: null,
            result: null,
          }),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req, reply) =>
      reply.status(201).send(await createEvaluation(app, req.projectId, req.params.id, req.body.file)),
  )

  app.get(
    '/v1/models/:id/evaluations',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'listModelEvaluations',
        summary: "A model's evaluations, newest first",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(EvaluationObject), listExample(evaluationExample)),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listEvaluations(app, req.projectId, req.params.id, req.query),
  )

  app.get(
    '/v1/models/:id/evaluations/:eval_id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'getModelEvaluation',
        summary: 'One evaluation of a model, with its result once it has succeeded',
        params: ModelEvalParams,
        response: { 200: jsonResponse(Type.Ref('ModelEvaluation'), evaluationExample), ...errorResponses(404) },
      },
    },
    async (req) => getEvaluation(app, req.projectId, req.params.id, req.params.eval_id),
  )
}

export default routes

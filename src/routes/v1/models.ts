import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { contentLength, uploadParts } from '../../modules/limits/storage-reservation.js'
import { EXPORT_TIMEOUT_MS, modelDownload } from '../../modules/models/model-export.js'
import {
  ModelDownloadQuery,
  ModelListQuery,
  PredictionsJsonBody,
  PredictionsMultipartBody,
} from '../../modules/models/model-schemas.js'
import { uploadModel } from '../../modules/models/model-upload.js'
import {
  deleteModel,
  getModel,
  listModels,
  modelLineage,
  presentModelWithMetrics,
} from '../../modules/models/models-service.js'
import { predict } from '../../modules/models/predictions-service.js'
import { errorResponses, IdParams, listOf } from '../../schemas/common.js'
import {
  deletedExample,
  jsonResponse,
  lineageExample,
  listExample,
  MODEL_ID,
  modelExample,
  modelUploadExample,
  predictionsMultipartExample,
  uploadedModelExample,
} from '../../schemas/examples.js'
import { DeletedObject, ModelObject } from '../../schemas/objects.js'

/** The multipart model upload body, shared with the admin route that uploads for a project. */
export const ModelUploadBody = Type.Object(
  {
    file: Type.String({ format: 'binary', description: 'zip of model.json and its weight shard files' }),
    input_shape: Type.String({
      description: 'JSON array of positive integers, the input shape without the batch dimension',
      examples: ['[28,28,1]', '[4]'],
    }),
    preprocessing: Type.Optional(
      Type.String({
        description: 'JSON object `{"scale", "offset"}`: raw values become `x * scale + offset` (default 1, 0)',
        examples: ['{"scale":0.00392156862745098,"offset":0}'],
      }),
    ),
    classes: Type.Optional(
      Type.String({
        description: "JSON array of class names in output order; its length must equal the model's output units",
        examples: ['["setosa","versicolor","virginica"]'],
      }),
    ),
    feature_layer: Type.Optional(
      Type.String({
        description: 'Name of the layer whose output feeds a new head; required to fine-tune by transfer',
      }),
    ),
    description: Type.Optional(Type.String({ maxLength: 2000 })),
  },
  { examples: [modelUploadExample] },
)

// Model ids of fine-tuned models contain colons (`ft:mnist-cnn:refit:abc12345`): clients URL-encode them.
const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/models',
    {
      config: { auth: 'project' },
      // The body is streamed by the handler; this no-op validator lets the schema document it.
      validatorCompiler: () => () => true,
      schema: {
        tags: ['models'],
        operationId: 'uploadModel',
        summary: 'Upload a TF.js layers model or graph model (zip of model.json and weight shards) as a base model',
        description:
          "The zip holds `model.json` (format `layers-model`) and the weight shards its `weightsManifest` lists, at the root or under one folder. It is checked without running the model: safe entry names, at most 1000 entries and 1 GiB uncompressed, shard sizes equal to the manifest, `input_shape` equal to the input layer, one class name per output unit, `feature_layer` an existing layer. The stored model is `model.json` + one `weights.bin` + `metadata.json`, like every other model. Faults in the archive answer `invalid_model`, faults in the fields `invalid_field`, both with `details`. A TF.js graph model (format `graph-model`, GraphDef `modelTopology`) is accepted as a frozen backbone for transfer jobs: `input_shape` must equal its Placeholder's, `feature_layer` names the feature node (default: the input of the last MatMul; unknown: `graph_model_feature_node_not_found`), and a node the graph path cannot run is `graph_model_op_unsupported` naming node and op.",
        consumes: ['multipart/form-data'],
        body: ModelUploadBody,
        response: {
          201: jsonResponse(Type.Ref('Model'), uploadedModelExample),
          ...errorResponses(400, 413, 415),
        },
      },
    },
    async (req, reply) => {
      const parts = uploadParts(req)
      return reply.status(201).send(await uploadModel(app, req.projectId, parts, contentLength(req)))
    },
  )

  app.get(
    '/v1/models',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'listModels',
        summary: "List built-in models and the project's own, newest first, optionally filtered",
        description:
          'Filters combine: `kind` (builtin, uploaded, fine_tuned, architecture), `base_model` (models fine-tuned from that model), `job` (the model that job made).',
        querystring: ModelListQuery,
        response: { 200: jsonResponse(listOf(ModelObject), listExample(modelExample)), ...errorResponses(400) },
      },
    },
    async (req) => listModels(app, req.projectId, req.query),
  )

  app.get(
    '/v1/models/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'getModel',
        summary: 'Get a model: input shape, classes, preprocessing, lineage, metrics',
        params: IdParams,
        response: { 200: jsonResponse(Type.Ref('Model'), modelExample), ...errorResponses(404) },
      },
    },
    async (req) => presentModelWithMetrics(app.db, await getModel(app.db, req.projectId, req.params.id)),
  )

  app.delete(
    '/v1/models/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'deleteModel',
        summary: 'Delete a fine-tuned or uploaded model (refused while an unfinished job or evaluation uses it)',
        description:
          'Answers 409 `model_in_use` while a job that has not finished uses the model as its base or as its distillation teacher (`method.distillation.teacher_model`), or while an evaluation of it is queued or running. Built-in models answer 400 `builtin_model_immutable`.',
        params: IdParams,
        response: {
          200: jsonResponse(DeletedObject, deletedExample(MODEL_ID, 'model')),
          ...errorResponses(400, 404, 409),
        },
      },
    },
    async (req) => deleteModel(app, req.projectId, req.params.id),
  )

  app.get(
    '/v1/models/:id/content',
    {
      config: { auth: 'project' },
      // a download, not held to REQUEST_TIMEOUT_MS: `format=saved_model` compiles the model in an inference
      // process before the zip streams (inception-v3: ~20 s on a busy 2-core machine)
      handlerTimeout: EXPORT_TIMEOUT_MS,
      schema: {
        tags: ['models'],
        operationId: 'downloadModel',
        summary:
          'Download the whole model (raw input to classes) as a zip: TF.js layers files, or a frozen SavedModel (`format=saved_model`)',
        params: IdParams,
        querystring: ModelDownloadQuery,
        response: {
          200: {
            description: 'zip archive',
            content: { 'application/zip': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(400, 404, 409, 503),
        },
      },
    },
    async (req, reply) => {
      const model = await getModel(app.db, req.projectId, req.params.id)
      const stream = await modelDownload(app, model, req.query.format)
      const name = model.id.replace(/[^a-zA-Z0-9._-]+/g, '_')
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${name}.zip"`)
        .send(stream as never) // a stream; the documented 200 is binary, which the type provider cannot express
    },
  )

  app.get(
    '/v1/models/:id/lineage',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['models'],
        operationId: 'getModelLineage',
        summary: 'Where a model comes from: base model chain, job, training file, checkpoints',
        params: IdParams,
        response: { 200: jsonResponse(Type.Ref('ModelLineage'), lineageExample), ...errorResponses(404) },
      },
    },
    async (req) => modelLineage(app, req.projectId, req.params.id),
  )

  app.post(
    '/v1/models/:id/predictions',
    {
      config: { auth: 'project' },
      bodyLimit: 32 * 1024 * 1024,
      // The inference pool enforces REQUEST_TIMEOUT_MS on the prediction itself (504 prediction_timeout, the
      // child replaced); the handler's own limit comes later so that answer, not a generic one, is sent.
      handlerTimeout: app.config.requestTimeoutMs + 2000,
      // JSON and multipart are both parsed by the handler, which names the input at fault in `details`;
      // this no-op validator lets the schema document both bodies.
      validatorCompiler: () => () => true,
      schema: {
        tags: ['models'],
        operationId: 'createPredictions',
        summary: 'Classify up to 256 inputs: images (base64 JSON or multipart) or tabular rows',
        description: `Inputs are preprocessed exactly as the model's training data was: images are decoded (PNG or JPEG), resized to the model's input height and width and brought to its channels, then scaled as \`preprocessing\` says; rows are standardized with the statistics stored at training time. Answers the \`top_k\` most probable classes of each input, in input order. A JSON body is at most 32 MiB; multipart takes one \`image\` file part per input. Wrong types, counts or sizes answer 400 \`invalid_input\` with \`details\` such as \`{"field": "inputs[3].features", "message": "expected 4 numbers, got 3"}\`; an architecture or a model without class names answers 400 \`model_not_predictable\`.`,
        params: IdParams,
        body: {
          content: {
            'application/json': { schema: PredictionsJsonBody },
            'multipart/form-data': { schema: { ...PredictionsMultipartBody, examples: [predictionsMultipartExample] } },
          },
        } as never,
        response: { 200: Type.Ref('PredictionList'), ...errorResponses(400, 404, 413, 415) },
      },
    },
    async (req, reply) => predict(app, req, reply, req.projectId, req.params.id),
  )
}

export default routes

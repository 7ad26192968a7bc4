// What the dashboard does on a project's behalf. The page holds no API key (project routes refuse the admin
// token), so these admin routes take the project from the path (or from the job or model they act on) and
// call the same services with the same request schemas as the project routes: the rules cannot drift.
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { notFound } from '../../../errors.js'
import { NEWEST_FIRST, olderThan, toList } from '../../../lib/pagination.js'
import { uploadFile } from '../../../modules/files/files-service.js'
import { listJobCheckpoints } from '../../../modules/jobs/job-reads.js'
import { createJob, presentJob, previewJob } from '../../../modules/jobs/jobs-service.js'
import { contentLength, uploadParts } from '../../../modules/limits/storage-reservation.js'
import { checkpointZip } from '../../../modules/models/checkpoint-download.js'
import { createEvaluation, presentEvaluation } from '../../../modules/models/evaluations-service.js'
import {
  CheckpointParams,
  CreateEvaluationBody,
  EvaluationObject,
  PredictionsJsonBody,
  PredictionsMultipartBody,
} from '../../../modules/models/model-schemas.js'
import { uploadModel } from '../../../modules/models/model-upload.js'
import { predict } from '../../../modules/models/predictions-service.js'
import {
  createWebhook,
  deleteWebhook,
  listDeliveries,
  listWebhooks,
  webhookRules,
} from '../../../modules/webhooks/webhooks-service.js'
import { errorResponses, IdParams, ListQuery, listOf } from '../../../schemas/common.js'
import {
  checkpointExample,
  deletedExample,
  evaluationExample,
  exampleOf,
  jsonResponse,
  listExample,
  predictionsMultipartExample,
  queuedJobExample,
  uploadedFileExample,
  uploadedModelExample,
} from '../../../schemas/examples.js'
import { CreateJobBody } from '../../../schemas/jobs.js'
import { CheckpointObject, DeletedObject } from '../../../schemas/objects.js'
import { FileUploadBody } from '../files.js'
import { ModelUploadBody } from '../models.js'
import { CreatedWebhookObject, CreateWebhookBody, DeliveryObject, WebhookObject } from '../webhooks.js'
import { AdminJob, ProjectRef } from './schemas.js'

const CSRF_NOTE = 'With the dashboard session cookie, send the `x-refit-csrf` header.'

async function findProject(app: FastifyInstance, id: string) {
  const project = await app.db.project.findUnique({ where: { id } })
  if (!project) throw notFound('project', id)
  return project
}

async function findJob(app: FastifyInstance, id: string) {
  const job = await app.db.fineTuningJob.findUnique({ where: { id } })
  if (!job) throw notFound('fine-tuning job', id)
  return job
}

async function findModel(app: FastifyInstance, id: string) {
  const model = await app.db.model.findFirst({ where: { id, deletedAt: null } })
  if (!model) throw notFound('model', id)
  return model
}

const WebhookParams = Type.Object(
  { id: Type.String({ maxLength: 200 }), webhook_id: Type.String({ maxLength: 200 }) },
  { additionalProperties: false },
)

const DryRunQuery = Type.Object(
  {
    dry_run: Type.Optional(
      Type.Boolean({
        description:
          'Check and resolve the job without creating it: the answer is the job as it would start ("auto" hyperparameters and method fields resolved when the files are processed), with `id` empty. Errors are the ones creating it would give.',
      }),
    ),
  },
  { additionalProperties: false },
)

const AdminEvaluation = Type.Object({ ...EvaluationObject.properties, project: ProjectRef })

const routes: FastifyPluginAsyncTypebox = async (app) => {
  const projectRef = async (id: string) => {
    const p = await findProject(app, id)
    return { id: p.id, name: p.name }
  }

  app.post(
    '/v1/admin/projects/:id/files',
    {
      config: { auth: 'admin' },
      validatorCompiler: () => () => true, // streamed by the handler, as on POST /v1/files
      schema: {
        tags: ['admin'],
        operationId: 'adminUploadFile',
        summary: "Upload a dataset into a project (as the project's POST /v1/files does)",
        description: CSRF_NOTE,
        consumes: ['multipart/form-data'],
        params: IdParams,
        body: FileUploadBody,
        response: { 201: jsonResponse(Type.Ref('File'), uploadedFileExample), ...errorResponses(400, 404, 413, 415) },
      },
    },
    async (req, reply) => {
      const project = await findProject(app, req.params.id)
      const parts = uploadParts(req)
      return reply.status(201).send(await uploadFile(app, project.id, parts, contentLength(req)))
    },
  )

  app.post(
    '/v1/admin/projects/:id/fine_tuning/jobs',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminCreateJob',
        summary: 'Create a fine-tuning job in a project, or with dry_run=true resolve it without creating it',
        description: `The body and rules are those of POST /v1/fine_tuning/jobs. ${CSRF_NOTE}`,
        params: IdParams,
        querystring: DryRunQuery,
        body: CreateJobBody,
        response: {
          200: jsonResponse(AdminJob, {
            ...queuedJobExample,
            project: { id: 'proj-3k9x0c1v7b2n5m8q4w6e1r0t', name: 'digits' },
          }),
          ...errorResponses(400, 404, 429),
        },
      },
    },
    async (req) => {
      const project = await projectRef(req.params.id)
      if (req.query.dry_run) return { ...(await previewJob(app, project.id, req.body)), project }
      return { ...presentJob(await createJob(app, project.id, req.body)), project }
    },
  )

  app.post(
    '/v1/admin/projects/:id/models',
    {
      config: { auth: 'admin' },
      validatorCompiler: () => () => true, // streamed by the handler, as on POST /v1/models
      schema: {
        tags: ['admin'],
        operationId: 'adminUploadModel',
        summary: "Upload a TF.js layers model into a project (as the project's POST /v1/models does)",
        description: CSRF_NOTE,
        consumes: ['multipart/form-data'],
        params: IdParams,
        body: ModelUploadBody,
        response: { 201: jsonResponse(Type.Ref('Model'), uploadedModelExample), ...errorResponses(400, 404, 413, 415) },
      },
    },
    async (req, reply) => {
      const project = await findProject(app, req.params.id)
      const parts = uploadParts(req)
      return reply.status(201).send(await uploadModel(app, project.id, parts, contentLength(req)))
    },
  )

  app.post(
    '/v1/admin/projects/:id/webhooks',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminCreateWebhook',
        summary: 'Create a webhook for a project; the signing secret is shown only in this answer',
        description: CSRF_NOTE,
        params: IdParams,
        body: CreateWebhookBody,
        response: { 201: CreatedWebhookObject, ...errorResponses(400, 403, 404) },
      },
    },
    async (req, reply) => {
      const project = await findProject(app, req.params.id)
      return reply.status(201).send(await createWebhook(app.db, project.id, req.body, webhookRules(app)))
    },
  )

  app.get(
    '/v1/admin/projects/:id/webhooks',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListWebhooks',
        summary: "A project's webhooks, newest first (without secrets)",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(WebhookObject), listExample(exampleOf(WebhookObject))),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listWebhooks(app.db, (await findProject(app, req.params.id)).id, req.query),
  )

  app.delete(
    '/v1/admin/projects/:id/webhooks/:webhook_id',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminDeleteWebhook',
        summary: "Delete a project's webhook; its pending deliveries are given up",
        description: CSRF_NOTE,
        params: WebhookParams,
        response: {
          200: jsonResponse(DeletedObject, deletedExample('wh-7c1m4x0q2w9e8r5t3y6u1i0o', 'webhook')),
          ...errorResponses(404),
        },
      },
    },
    async (req) => deleteWebhook(app.db, (await findProject(app, req.params.id)).id, req.params.webhook_id),
  )

  app.get(
    '/v1/admin/projects/:id/webhooks/:webhook_id/deliveries',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListWebhookDeliveries',
        summary: "A project's webhook delivery log, newest first",
        params: WebhookParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(DeliveryObject), listExample(exampleOf(DeliveryObject))),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listDeliveries(app.db, (await findProject(app, req.params.id)).id, req.params.webhook_id, req.query),
  )

  app.post(
    '/v1/admin/models/:id/predictions',
    {
      config: { auth: 'admin' },
      bodyLimit: 32 * 1024 * 1024,
      // JSON and multipart are parsed by the handler, as on POST /v1/models/{id}/predictions.
      validatorCompiler: () => () => true,
      schema: {
        tags: ['admin'],
        operationId: 'adminCreatePredictions',
        summary: "Classify inputs with any model (as the project's POST /v1/models/{id}/predictions does)",
        description: CSRF_NOTE,
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
    async (req, reply) => {
      const model = await findModel(app, req.params.id)
      // Built-in models belong to no project: '' matches none, and built-ins are visible to every project.
      return predict(app, req, reply, model.projectId ?? '', model.id)
    },
  )

  app.get(
    '/v1/admin/models/:id/evaluations',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListModelEvaluations',
        summary: "Any model's evaluations (of every project, for built-in models), newest first",
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(
            listOf(AdminEvaluation),
            listExample({ ...evaluationExample, project: { id: 'proj-3k9x0c1v7b2n5m8q4w6e1r0t', name: 'digits' } }),
          ),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => {
      const model = await findModel(app, req.params.id)
      const limit = req.query.limit ?? 20
      const cursor = req.query.after
        ? await app.db.evaluation.findFirst({ where: { id: req.query.after, modelId: model.id } })
        : null
      const rows = await app.db.evaluation.findMany({
        where: { modelId: model.id, ...olderThan(cursor) },
        orderBy: NEWEST_FIRST,
        include: { project: true },
        take: limit + 1,
      })
      return toList(rows, limit, (e) => ({
        ...presentEvaluation(e),
        project: { id: e.project.id, name: e.project.name },
      }))
    },
  )

  app.post(
    '/v1/admin/models/:id/evaluations',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminCreateModelEvaluation',
        summary: "Score any model on a labelled file (as the project's POST /v1/models/{id}/evaluations does)",
        description: `The evaluation belongs to the model's project (for a built-in model, to the file's). ${CSRF_NOTE}`,
        params: IdParams,
        body: CreateEvaluationBody,
        response: { 201: jsonResponse(Type.Ref('ModelEvaluation'), evaluationExample), ...errorResponses(400, 404) },
      },
    },
    async (req, reply) => {
      const model = await findModel(app, req.params.id)
      const file = await app.db.file.findFirst({ where: { id: req.body.file, deletedAt: null } })
      if (!file) throw notFound('file', req.body.file, 'file')
      const projectId = model.projectId ?? file.projectId
      return reply.status(201).send(await createEvaluation(app, projectId, model.id, file.id))
    },
  )

  app.get(
    '/v1/admin/jobs/:id/checkpoints',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminListJobCheckpoints',
        summary: "Any job's checkpoints (one per epoch), newest first",
        description: 'Start a job from one by creating a job whose `model` is the checkpoint id (`ftckpt-…`).',
        params: IdParams,
        querystring: ListQuery,
        response: {
          200: jsonResponse(listOf(CheckpointObject), listExample(checkpointExample)),
          ...errorResponses(400, 404),
        },
      },
    },
    async (req) => listJobCheckpoints(app.db, await findJob(app, req.params.id), req.query),
  )

  app.get(
    '/v1/admin/jobs/:id/checkpoints/:checkpoint_id/content',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'adminDownloadJobCheckpoint',
        summary: "Download any job's checkpoint as a whole model (zip of model.json, weights.bin, metadata.json)",
        params: CheckpointParams,
        response: {
          200: {
            description: 'zip archive',
            content: { 'application/zip': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(404, 409),
        },
      },
    },
    async (req, reply) => {
      const job = await findJob(app, req.params.id)
      const { stream, name } = await checkpointZip(app, job.projectId, job.id, req.params.checkpoint_id)
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${name}.zip"`)
        .send(stream as never)
    },
  )
}

export default routes

import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import {
  deleteFile,
  EXPIRES_AFTER_SECONDS,
  fileContent,
  getFile,
  listFiles,
  presentFile,
  uploadFile,
} from '../../modules/files/files-service.js'
import { contentLength, uploadParts } from '../../modules/limits/storage-reservation.js'
import { errorResponses, IdParams, listOf, StringEnum } from '../../schemas/common.js'
import {
  deletedExample,
  FILE_ID,
  fileExample,
  fileUploadExample,
  jsonResponse,
  listExample,
  uploadedFileExample,
} from '../../schemas/examples.js'
import { DeletedObject, FileObject } from '../../schemas/objects.js'

/** The multipart upload body, shared with the admin route that uploads for a project. */
export const FileUploadBody = Type.Object(
  {
    file: Type.String({
      format: 'binary',
      description: 'CSV, JSONL, zip of image folders, or zip of IDX files',
    }),
    purpose: Type.Literal('fine-tune'),
    format: Type.Optional(StringEnum(['csv', 'jsonl', 'image_zip', 'idx'])),
    label_column: Type.Optional(Type.String({ description: 'CSV label column (default `label`)' })),
    'expires_after[anchor]': Type.Optional(
      Type.Literal('created_at', { description: "OpenAI's expiry policy: the only anchor is `created_at`" }),
    ),
    'expires_after[seconds]': Type.Optional(
      Type.Integer({
        minimum: EXPIRES_AFTER_SECONDS.min,
        maximum: EXPIRES_AFTER_SECONDS.max,
        description:
          'Delete the file this long after upload (`expires_at`); a file an unfinished job uses is deleted once that job ends',
      }),
    ),
  },
  { examples: [fileUploadExample] },
)

/** OpenAI's `files.list` parameters (its page limit is 10,000). */
const FileListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: 20 })),
    after: Type.Optional(Type.String({ maxLength: 200, description: 'Id of the last object of the previous page.' })),
    order: Type.Optional(StringEnum(['asc', 'desc'], { description: 'By creation time; default desc (newest first)' })),
    purpose: Type.Optional(Type.String({ maxLength: 64, description: 'Only files of this purpose' })),
  },
  { additionalProperties: false },
)

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.post(
    '/v1/files',
    {
      config: { auth: 'project' },
      // The body is streamed by the handler; this no-op validator lets the schema document it.
      validatorCompiler: () => () => true,
      schema: {
        tags: ['files'],
        operationId: 'uploadFile',
        summary: 'Upload a dataset (streamed to storage, validated asynchronously by a worker)',
        consumes: ['multipart/form-data'],
        body: FileUploadBody,
        response: {
          201: jsonResponse(
            Type.Ref('File'),
            uploadedFileExample,
            'The stored file, `uploaded`: poll it until `processed` or `error`',
          ),
          ...errorResponses(400, 413, 415),
        },
      },
    },
    async (req, reply) => {
      const parts = uploadParts(req)
      return reply.status(201).send(await uploadFile(app, req.projectId, parts, contentLength(req)))
    },
  )

  app.get(
    '/v1/files',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['files'],
        operationId: 'listFiles',
        summary: "List the project's files, newest first",
        querystring: FileListQuery,
        response: { 200: jsonResponse(listOf(FileObject), listExample(fileExample)), ...errorResponses(400) },
      },
    },
    async (req) => listFiles(app, req.projectId, req.query),
  )

  app.get(
    '/v1/files/:id/content',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['files'],
        operationId: 'downloadFile',
        summary: "A file's bytes, streamed: a dataset as uploaded, or a job's result CSV",
        params: IdParams,
        response: {
          200: {
            description: 'the bytes',
            content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
          },
          ...errorResponses(400, 404),
        },
      },
    },
    async (req, reply) => {
      const { row, stream } = await fileContent(app, req.projectId, req.params.id)
      return reply
        .header('content-type', row.purpose === 'fine-tune-results' ? 'text/csv' : 'application/octet-stream')
        .header('content-length', String(row.bytes))
        .header('content-disposition', `attachment; filename="${row.filename.replace(/["\\\r\n]/g, '_')}"`)
        .send(stream as never) // a stream; the documented 200 is binary, which the type provider cannot express
    },
  )

  app.get(
    '/v1/files/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['files'],
        operationId: 'getFile',
        summary: 'Get a file: status, validation error with line or entry, dataset stats',
        params: IdParams,
        response: { 200: jsonResponse(Type.Ref('File'), fileExample), ...errorResponses(404) },
      },
    },
    async (req) => presentFile(await getFile(app, req.projectId, req.params.id)),
  )

  app.delete(
    '/v1/files/:id',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['files'],
        operationId: 'deleteFile',
        summary: 'Delete a file and its bytes (refused while an unfinished job uses it)',
        params: IdParams,
        response: { 200: jsonResponse(DeletedObject, deletedExample(FILE_ID, 'file')), ...errorResponses(404, 409) },
      },
    },
    async (req) => deleteFile(app, req.projectId, req.params.id),
  )
}

export default routes

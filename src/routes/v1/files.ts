import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { deleteFile, getFile, listFiles, presentFile, uploadFile } from '../../modules/files/files-service.js'
import { errorResponses, IdParams, ListQuery, listOf, StringEnum } from '../../schemas/common.js'
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
  },
  { examples: [fileUploadExample] },
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
      const parts = req.parts({ limits: { fileSize: app.config.maxUploadBytes, files: 1, fields: 8, parts: 10 } })
      return reply.status(201).send(await uploadFile(app, req.projectId, parts))
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
        querystring: ListQuery,
        response: { 200: jsonResponse(listOf(FileObject), listExample(fileExample)), ...errorResponses(400) },
      },
    },
    async (req) => listFiles(app, req.projectId, req.query),
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

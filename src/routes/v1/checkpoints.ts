import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { checkpointZip } from '../../modules/models/checkpoint-download.js'
import { CheckpointParams } from '../../modules/models/model-schemas.js'
import { errorResponses } from '../../schemas/common.js'

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/fine_tuning/jobs/:id/checkpoints/:checkpoint_id/content',
    {
      config: { auth: 'project' },
      schema: {
        tags: ['fine-tuning'],
        operationId: 'downloadFineTuningCheckpoint',
        summary: 'Download a checkpoint as a whole model: a zip of model.json, weights.bin, metadata.json',
        description:
          'The zip loads with stock TF.js (`tf.loadLayersModel`) and takes raw input preprocessed as metadata.json says, like a model download. A checkpoint that holds only part of a model (no model.json or metadata.json) answers 409 `checkpoint_not_downloadable`.',
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
      const { stream, name } = await checkpointZip(app, req.projectId, req.params.id, req.params.checkpoint_id)
      return reply
        .header('content-type', 'application/zip')
        .header('content-disposition', `attachment; filename="${name}.zip"`)
        .send(stream as never) // a stream; the documented 200 is binary, which the type provider cannot express
    },
  )
}

export default routes

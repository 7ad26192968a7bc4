// Checkpoint downloads: a zip of the checkpoint directory's model.json, weights.bin and metadata.json,
// the same layout as a model download, so stock TF.js loads it. Only checkpoints that hold a whole model
// (raw input to classes, described by metadata.json) qualify; head-only checkpoints answer 409.
import { existsSync } from 'node:fs'
import path from 'node:path'
import type { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import yazl from 'yazl'
import { METADATA_JSON, MODEL_JSON, WEIGHTS_BIN } from '../../engine/model-io.js'
import { AppError, notFound } from '../../errors.js'
import { getJob } from '../jobs/jobs-service.js'

export async function checkpointZip(app: FastifyInstance, projectId: string, jobId: string, checkpointId: string) {
  const job = await getJob(app.db, projectId, jobId)
  const ckpt = await app.db.checkpoint.findFirst({
    where: { id: checkpointId, jobId: job.id },
    include: { artifact: true },
  })
  if (!ckpt) throw notFound('checkpoint', checkpointId, 'checkpoint_id')
  const dir = await app.storage.localPath(ckpt.artifact.path)
  const missing = [MODEL_JSON, WEIGHTS_BIN, METADATA_JSON].filter((f) => !existsSync(path.join(dir, f)))
  if (missing.length)
    throw new AppError(
      'checkpoint_not_downloadable',
      `Checkpoint ${checkpointId} (step ${ckpt.step}) holds no whole model: ${missing.join(', ')} missing. Download the job's fine-tuned model instead.`,
      { param: 'checkpoint_id' },
    )
  const zip = new yazl.ZipFile()
  for (const name of [MODEL_JSON, WEIGHTS_BIN, METADATA_JSON]) zip.addFile(path.join(dir, name), name)
  zip.end()
  return { stream: zip.outputStream as unknown as Readable, name: `${job.id}-step-${ckpt.step}` }
}

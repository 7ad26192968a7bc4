// Turns a job row into the training process's request: where its files and base model are, the
// resolved hyperparameters, and the checkpoint to resume from.

import type { DatasetFormat } from '../src/datasets/types.js'
import type { Db } from '../src/db/client.js'
import type { ArchitectureId, MethodSpec, TrainRequest } from '../src/engine/protocol.js'
import type { File, FineTuningJob } from '../src/generated/prisma/client.js'
import { JobFailure } from '../src/modules/jobs/failure-codes.js'
import type { StoredMethod } from '../src/modules/jobs/methods.js'
import { modelDir } from '../src/modules/models/models-service.js'
import type { Storage } from '../src/storage/storage.js'

const dataset = async (storage: Storage, f: File, maxImagePixels?: number) => ({
  path: await storage.localPath(f.storagePath!),
  format: f.format as DatasetFormat,
  options: { labelColumn: f.labelColumn ?? undefined, ...(maxImagePixels ? { maxImagePixels } : {}) },
})

export async function buildTrainRequest(
  db: Db,
  storage: Storage,
  job: FineTuningJob & { trainingFile: File; validationFile: File | null },
  opts: {
    outputDir: string
    backend: TrainRequest['backend']
    resumeCheckpointDir: string | null
    /** MAX_IMAGE_PIXELS: the training process checks images as validation did */
    maxImagePixels?: number
    graph?: TrainRequest['graph']
  },
): Promise<TrainRequest> {
  const base = await db.model.findUnique({ where: { id: job.baseModelId }, include: { artifact: true } })
  if (!base || base.deletedAt)
    throw new JobFailure('base_model_missing', `Base model ${job.baseModelId} no longer exists.`)
  if (!job.trainingFile.storagePath || job.trainingFile.deletedAt)
    throw new JobFailure('training_file_missing', `Training file ${job.trainingFileId} was deleted.`)
  if (job.validationFile && (!job.validationFile.storagePath || job.validationFile.deletedAt))
    throw new JobFailure('validation_file_missing', `Validation file ${job.validationFileId} was deleted.`)
  let initDir: string | null = null
  if (job.initCheckpointId) {
    const ckpt = await db.checkpoint.findUnique({ where: { id: job.initCheckpointId }, include: { artifact: true } })
    if (!ckpt) throw new JobFailure('checkpoint_missing', `Checkpoint ${job.initCheckpointId} no longer exists.`)
    initDir = await storage.localPath(ckpt.artifact.path)
  }
  const stored = job.method as unknown as StoredMethod
  let method: MethodSpec
  if (stored.type === 'transfer') method = { type: 'transfer', ...stored.transfer }
  else if (stored.type === 'supervised') method = { type: 'supervised' }
  else {
    const teacher = await db.model.findUnique({
      where: { id: stored.distillation.teacher_model },
      include: { artifact: true },
    })
    if (!teacher || teacher.deletedAt)
      throw new JobFailure('teacher_model_missing', `Teacher ${stored.distillation.teacher_model} no longer exists.`)
    method = {
      type: 'distillation',
      teacherModelDir: await modelDir(storage, teacher),
      teacherModelId: teacher.id,
      temperature: stored.distillation.temperature,
      alpha: stored.distillation.alpha,
    }
  }
  return {
    type: 'train',
    jobId: job.id,
    method,
    ...(base.kind === 'architecture'
      ? { architecture: base.id as ArchitectureId }
      : { baseModelDir: await modelDir(storage, base) }),
    baseModelId: base.id,
    training: await dataset(storage, job.trainingFile, opts.maxImagePixels),
    validation: job.validationFile ? await dataset(storage, job.validationFile, opts.maxImagePixels) : undefined,
    hyperparameters: job.hyperparameters as unknown as TrainRequest['hyperparameters'],
    seed: job.seed,
    outputDir: opts.outputDir,
    backend: opts.backend,
    ...(opts.graph ? { graph: opts.graph } : {}),
    ...(opts.resumeCheckpointDir ? { resumeFrom: { checkpointDir: opts.resumeCheckpointDir } } : {}),
    ...(initDir ? { initFrom: { checkpointDir: initDir } } : {}),
  }
}

// The wire object of a fine-tuning job. Its own file so that the lifecycle module (webhook payloads) and
// the services can both use it without importing each other.
import type { FineTuningJob } from '../../generated/prisma/client.js'
import { resultFileId, unixSeconds } from '../../lib/ids.js'
import { readHyperparameters, readMethod, readProgress } from '../../schemas/jobs.js'
import { presentJobError } from './failure-codes.js'

/** The job as the API shows it; its JSON columns are read through the job contract (src/schemas/jobs.ts). */
export function presentJob(j: FineTuningJob, extra: { queuePosition?: number | null } = {}) {
  const hp = readHyperparameters(j.hyperparameters)
  const progress = readProgress(j.progress)
  return {
    id: j.id,
    object: 'fine_tuning.job' as const,
    model: j.baseModelId,
    created_at: unixSeconds(j.createdAt)!,
    started_at: unixSeconds(j.startedAt),
    finished_at: unixSeconds(j.finishedAt),
    fine_tuned_model: j.fineTunedModelId,
    organization_id: j.projectId,
    // written in the transaction that marks the job succeeded (lifecycle.succeed)
    result_files: j.status === 'succeeded' ? [resultFileId(j.id)] : [],
    status: j.status,
    status_reason: j.statusReason,
    validation_file: j.validationFileId,
    training_file: j.trainingFileId,
    hyperparameters: hp,
    method: readMethod(j.method, hp),
    trained_tokens: null,
    trained_samples: j.trainedSamples === null ? null : Number(j.trainedSamples),
    error: presentJobError(j.errorCode, j.errorMessage, j.errorParam),
    seed: j.seed,
    suffix: j.suffix,
    user_provided_suffix: j.suffix,
    metadata: (j.userMetadata as Record<string, string> | null) ?? null,
    integrations: [] as Record<string, unknown>[],
    estimated_finish: progress?.estimated_finish ?? null,
    backend: j.backend,
    attempt: j.attempt,
    progress,
    queue_position: extra.queuePosition ?? null,
    retry_of_job_id: j.retryOfJobId,
    sweep_id: j.sweepId ?? null,
    sweep_values: (j.sweepValues as Record<string, unknown> | null) ?? null,
    init_checkpoint: j.initCheckpointId,
    resource_class: j.resourceClass ?? 'auto',
  }
}

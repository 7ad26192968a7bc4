// The wire object of a fine-tuning job. Its own file so that the lifecycle module (webhook payloads) and
// the services can both use it without importing each other.
import type { FineTuningJob } from '../../generated/prisma/client.js'
import { resultFileId, unixSeconds } from '../../lib/ids.js'
import { presentJobError } from './failure-codes.js'
import type { StoredMethod } from './methods.js'

/** OpenAI's shape: `{type, <type>: {hyperparameters, ...}}`, with the hyperparameters as resolved. */
function presentMethod(m: StoredMethod, hyperparameters: Record<string, unknown>) {
  const config = (m as Record<string, unknown>)[m.type] as Record<string, unknown> | undefined
  return { type: m.type, [m.type]: { ...(config ?? {}), hyperparameters } }
}

export function presentJob(j: FineTuningJob, extra: { queuePosition?: number | null } = {}) {
  const hp = j.hyperparameters as Record<string, unknown>
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
    method: presentMethod(j.method as unknown as StoredMethod, hp),
    trained_tokens: null,
    trained_samples: j.trainedSamples === null ? null : Number(j.trainedSamples),
    error: presentJobError(j.errorCode, j.errorMessage, j.errorParam),
    seed: j.seed,
    suffix: j.suffix,
    user_provided_suffix: j.suffix,
    metadata: (j.userMetadata as Record<string, string> | null) ?? null,
    integrations: [] as Record<string, unknown>[],
    estimated_finish: ((j.progress as { estimated_finish?: number } | null)?.estimated_finish ?? null) as number | null,
    backend: j.backend,
    attempt: j.attempt,
    progress: (j.progress as Record<string, unknown> | null) ?? null,
    queue_position: extra.queuePosition ?? null,
    retry_of_job_id: j.retryOfJobId,
    init_checkpoint: j.initCheckpointId,
    resource_class: j.resourceClass ?? 'auto',
  }
}

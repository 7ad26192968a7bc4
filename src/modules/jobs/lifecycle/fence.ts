// Writes a worker makes for a job it claimed are fenced on the job's attempt number: each runs in a
// transaction that first locks the job row FOR SHARE and checks the attempt. A worker that lost the job
// (its lock expired and another worker claimed it, bumping the attempt) gets StaleAttemptError instead of
// overwriting the new owner's metrics, checkpoints, events or status.
import type { Db } from '../../../db/client.js'
import type { Prisma } from '../../../generated/prisma/client.js'

export class StaleAttemptError extends Error {
  constructor(jobId: string, attempt: number) {
    super(`job ${jobId} attempt ${attempt} is no longer the current attempt`)
  }
}

export interface Fence {
  jobId: string
  attempt: number
}

export async function fenced<T>(db: Db, fence: Fence, fn: (tx: Prisma.TransactionClient) => Promise<T>): Promise<T> {
  return db.$transaction(async (tx) => {
    const rows = await tx.$queryRaw<{ attempt: number }[]>`
      SELECT attempt FROM fine_tuning_jobs WHERE id = ${fence.jobId} FOR SHARE`
    if (rows[0]?.attempt !== fence.attempt) throw new StaleAttemptError(fence.jobId, fence.attempt)
    return fn(tx)
  })
}

// What this worker process measured while training, read by its registry heartbeat and its metrics: the
// latest samples per second of each running job, and of the last job it trained.

/** job id -> latest samples per second, while the job trains in this process */
export const jobThroughput = new Map<string, number>()

let last: number | null = null

export function recordThroughput(jobId: string, samplesPerSecond: number) {
  if (!Number.isFinite(samplesPerSecond) || samplesPerSecond <= 0) return
  jobThroughput.set(jobId, samplesPerSecond)
  last = samplesPerSecond
}

export function forgetJob(jobId: string) {
  jobThroughput.delete(jobId)
}

/** samples per second of the most recent progress report in this process, null before the first */
export function lastThroughput(): number | null {
  return last
}

// Job durations are measured where jobs end (worker processes) and scraped where HTTP is served (API
// processes): the histogram lives in one Redis hash, so every API process reports the same totals, however
// many workers fed it. Buckets are cumulative, as Prometheus wants them.
import type { Redis } from 'ioredis'
import type { Db } from '../db/client.js'

/** Upper bounds in seconds; +Inf is implied. */
export const JOB_DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600]

const key = (prefix: string) => `${prefix}:metrics:job_duration`

/** Adds one finished job to the histogram. */
export async function observeJobDuration(
  redis: Redis,
  prefix: string,
  labels: { method: string; status: string },
  seconds: number,
) {
  const base = `${labels.method}|${labels.status}`
  const m = redis.multi()
  for (const le of JOB_DURATION_BUCKETS) if (seconds <= le) m.hincrby(key(prefix), `${base}|${le}`, 1)
  m.hincrby(key(prefix), `${base}|+Inf`, 1)
  m.hincrbyfloat(key(prefix), `${base}|sum`, seconds)
  await m.exec()
}

/** Reads a finished job's method and timing and records it; never throws (metrics must not fail a job). */
export function jobDurationSeconds(db: Db, redis: Redis, prefix: string, jobId: string): Promise<void> {
  return (async () => {
    const j = await db.fineTuningJob.findUnique({
      where: { id: jobId },
      select: { status: true, method: true, startedAt: true, createdAt: true, finishedAt: true },
    })
    if (!j?.finishedAt) return
    const method = (j.method as { type?: string } | null)?.type ?? 'unknown'
    const seconds = (j.finishedAt.getTime() - (j.startedAt ?? j.createdAt).getTime()) / 1000
    await observeJobDuration(redis, prefix, { method, status: j.status }, Math.max(0, seconds))
  })().catch(() => {})
}

/** The histogram in Prometheus text format. */
export async function jobDurationText(redis: Redis, prefix: string): Promise<string> {
  const raw = await redis.hgetall(key(prefix))
  const series = new Map<string, Map<string, number>>()
  for (const [field, value] of Object.entries(raw)) {
    const [method, status, le] = field.split('|')
    const k = `${method}|${status}`
    if (!series.has(k)) series.set(k, new Map())
    series.get(k)!.set(le, Number(value))
  }
  const name = 'refit_job_duration_seconds'
  const lines = [
    `# HELP ${name} Fine-tuning job duration from start to end, by method and final status.`,
    `# TYPE ${name} histogram`,
  ]
  for (const [k, v] of [...series].sort()) {
    const [method, status] = k.split('|')
    const l = `method="${esc(method)}",status="${esc(status)}"`
    for (const le of JOB_DURATION_BUCKETS) lines.push(`${name}_bucket{${l},le="${le}"} ${v.get(String(le)) ?? 0}`)
    const count = v.get('+Inf') ?? 0
    lines.push(`${name}_bucket{${l},le="+Inf"} ${count}`)
    lines.push(`${name}_sum{${l}} ${v.get('sum') ?? 0}`)
    lines.push(`${name}_count{${l}} ${count}`)
  }
  return `${lines.join('\n')}\n`
}

export const esc = (s: string) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')

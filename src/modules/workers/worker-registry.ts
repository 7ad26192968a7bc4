// The worker registry: every worker process keeps an entry in Redis, refreshed by a heartbeat, that says
// what it is (host, pid, backend, device, resource class), what it runs now and how fast it trained last.
// An entry expires after three missed heartbeats, so a SIGKILLed worker drops out on its own; a graceful
// close removes it at once. The API lists it (GET /v1/admin/workers), routes nothing through it, and uses
// it to tell users when no live worker can run a queued job (unserved-jobs.ts).
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Redis } from 'ioredis'
import type { ResourceClass } from '../../config.js'

/** One worker process as it registered itself. */
export interface WorkerRecord {
  id: string
  pid: number
  hostname: string
  role: 'worker'
  /** the TF.js backend its training processes run on (proven by a self-test at start) */
  backend: string
  device: 'cpu' | 'gpu'
  resource_class: ResourceClass
  capabilities: Record<string, boolean>
  /** samples per second of its latest training progress, null before its first job */
  throughput_samples_per_second: number | null
  /** per running job, its latest samples per second */
  job_throughput: Record<string, number>
  current_jobs: string[]
  started_at: number
  /** unix milliseconds */
  last_heartbeat_ms: number
  heartbeat_ms: number
}

/** Missed heartbeats after which an entry expires. */
export const MISSED_HEARTBEATS = 3

const indexKey = (prefix: string) => `${prefix}:registry:workers`
const entryKey = (prefix: string, id: string) => `${prefix}:registry:worker:${id}`

export interface RegistryHandle {
  id: string
  /** writes the entry now (also called every heartbeat) */
  beat(): Promise<void>
  /** stops the heartbeat and removes the entry */
  close(): Promise<void>
}

export type WorkerIdentity = Pick<WorkerRecord, 'backend' | 'device' | 'resource_class' | 'capabilities'>

/**
 * Registers this process and refreshes its entry every `heartbeatMs`. `state()` is read at each beat:
 * the jobs running now and their throughput.
 */
export async function registerWorker(
  redis: Redis,
  prefix: string,
  identity: WorkerIdentity,
  heartbeatMs: number,
  state: () => { currentJobs: string[]; jobThroughput: Record<string, number>; lastThroughput: number | null },
  onError: (err: Error) => void = () => {},
): Promise<RegistryHandle> {
  const host = hostname()
  const id = `${host}-${process.pid}-${randomBytes(3).toString('hex')}`
  const startedAt = Date.now()
  const ttl = heartbeatMs * MISSED_HEARTBEATS
  const beat = async () => {
    const s = state()
    const now = Date.now()
    const record: WorkerRecord = {
      id,
      pid: process.pid,
      hostname: host,
      role: 'worker',
      ...identity,
      throughput_samples_per_second: s.lastThroughput === null ? null : Math.round(s.lastThroughput * 10) / 10,
      job_throughput: s.jobThroughput,
      current_jobs: s.currentJobs,
      started_at: startedAt,
      last_heartbeat_ms: now,
      heartbeat_ms: heartbeatMs,
    }
    await redis
      .multi()
      .set(entryKey(prefix, id), JSON.stringify(record), 'PX', ttl)
      .zadd(indexKey(prefix), now + ttl, id)
      .exec()
  }
  await beat()
  const timer = setInterval(() => beat().catch(onError), heartbeatMs)
  timer.unref()
  return {
    id,
    beat,
    async close() {
      clearInterval(timer)
      await redis.multi().del(entryKey(prefix, id)).zrem(indexKey(prefix), id).exec().catch(onError)
    },
  }
}

/** The registered workers (expired entries pruned), oldest first. */
export async function listWorkers(redis: Redis, prefix: string): Promise<WorkerRecord[]> {
  const ids = await redis.zrange(indexKey(prefix), 0, -1)
  if (!ids.length) return []
  const raw = await redis.mget(ids.map((id) => entryKey(prefix, id)))
  const out: WorkerRecord[] = []
  const gone: string[] = []
  raw.forEach((r, i) => {
    if (r === null) gone.push(ids[i])
    else out.push(JSON.parse(r) as WorkerRecord)
  })
  // Only drop index entries whose own deadline passed: one may be mid-heartbeat.
  if (gone.length) await redis.zremrangebyscore(indexKey(prefix), '-inf', Date.now()).catch(() => 0)
  return out.sort((a, b) => a.started_at - b.started_at || a.id.localeCompare(b.id))
}

/** A worker is live while its last heartbeat is less than three heartbeats old. */
export function isAlive(w: WorkerRecord, now = Date.now()): boolean {
  return now - w.last_heartbeat_ms <= w.heartbeat_ms * MISSED_HEARTBEATS
}

/** The API's view of a worker: an allow-list of fields, times in unix seconds. */
export function presentWorker(w: WorkerRecord, now = Date.now()) {
  return {
    id: w.id,
    object: 'worker' as const,
    pid: w.pid,
    hostname: w.hostname,
    role: w.role,
    backend: w.backend,
    device: w.device,
    resource_class: w.resource_class,
    capabilities: w.capabilities,
    throughput_samples_per_second: w.throughput_samples_per_second,
    current_jobs: w.current_jobs,
    started_at: Math.floor(w.started_at / 1000),
    last_heartbeat_at: Math.floor(w.last_heartbeat_ms / 1000),
    alive: isAlive(w, now),
  }
}

// Exact storage quota: bytes are reserved before they are written, atomically across API processes, so
// concurrent uploads cannot together pass the quota (count-then-act let 30 uploads store 10x of it). Every
// writer of a project's bytes goes through here: uploads (files, model zips and the unpacked model), training
// checkpoints, fine-tuned models, result files and cached backbone features. (SavedModel exports are
// compiled per request and streamed: nothing of them is stored.)
//
// A project's in-flight reservations live in Redis: a hash reservation id -> bytes and a sorted set
// reservation id -> expiry, so a process that dies mid-upload frees its reservation after RESERVATION_TTL_MS.
// The Lua script compares stored bytes (from PostgreSQL, passed in) + reserved + asked with the quota and
// adds the reservation in one step. A finished upload records its row first, then drops its reservation,
// so for a moment its bytes count twice (refusing, never admitting, too much). Every release bumps a
// generation number; a reservation whose stored-bytes figure was read before the latest release (it may
// miss the released upload's row while no longer seeing its reservation) is refused by the script and
// tried again with a fresh figure, with a short random pause after the first few tries, for up to
// RESERVE_CONTENTION_MS (then 503 service_unavailable; a training job records an event instead).
//
// Redis unavailable (not connected, an error, or no answer within REDIS_RESERVE_TIMEOUT_MS): the
// reservation is made in PostgreSQL instead (`quota_reservations`), checked and inserted under a per-project
// advisory lock, so writers that fall back are exact among themselves; the Redis path counts those rows
// too. What Redis held when it went away (reservations of uploads in flight then) is not seen by the
// fallback: at most those uploads' reserved bytes, bounded by RESERVE_CHUNK_BYTES or their Content-Length.
import { randomUUID } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline, type Readable, Transform } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Config } from '../../config.js'
import { isTransientError } from '../../db/transient.js'
import { AppError } from '../../errors.js'
import { type LimitsDb, projectStorageQuota, storageUsed } from './limits-service.js'

/** An upload reserves this much more each time it passes what it has reserved (when no Content-Length said). */
export const RESERVE_CHUNK_BYTES = 8 * 1024 * 1024
/**
 * What a multipart body may hold besides the file (boundaries, part headers, a few short fields): a
 * Content-Length more than this past the room left is refused before the body is read.
 */
export const MULTIPART_SLACK_BYTES = 16 * 1024
/** A reservation not renewed for this long is dropped (its process died). */
export const RESERVATION_TTL_MS = 10 * 60_000
/** How long `reserve` keeps trying through other writers' releases (generation changes) before it gives up. */
export const RESERVE_CONTENTION_MS = 10_000
/** A Redis call of a reservation not answered within this counts as Redis unavailable (PostgreSQL fallback). */
export const REDIS_RESERVE_TIMEOUT_MS = 2_000

const RESERVE = `
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[8] then return -2 end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
local reserved = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do reserved = reserved + tonumber(v) end
if tonumber(ARGV[4]) + reserved + tonumber(ARGV[5]) > tonumber(ARGV[6]) then return -1 end
redis.call('HINCRBY', KEYS[1], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return reserved`

/** What a reservation needs: the database, Redis and the quota settings (an API instance or a worker's deps). */
export interface QuotaApp {
  db: LimitsDb & Pick<FastifyInstance['db'], '$transaction'>
  redis: FastifyInstance['redis']
  config: Pick<Config, 'queuePrefix' | 'storageQuotaBytes' | 'maxConcurrentJobs'>
}

/** Redis did not answer (down, reconnecting, frozen): the reservation falls back to PostgreSQL. */
class RedisUnavailable extends Error {}

function redisUnavailable(err: unknown): boolean {
  return (
    err instanceof RedisUnavailable ||
    isTransientError(err) ||
    /max retries per request|Stream isn't writeable|Connection is closed/i.test((err as Error)?.message ?? '')
  )
}

function timed<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RedisUnavailable(`Redis gave no answer within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

type Attempt = { kind: 'ok' } | { kind: 'over'; used: number; quota: number } | { kind: 'stale' }

/** Bytes a project may still write, reserved in steps; `release()` once the bytes are recorded (or removed). */
export class StorageReservation {
  private readonly id = randomUUID()
  reserved = 0
  /** bytes of this reservation held in Redis, and in PostgreSQL (the fallback) */
  private inRedis = false
  private inPostgres = false
  /** true once a step was reserved through PostgreSQL because Redis was unavailable */
  fellBack = false

  constructor(
    private readonly app: QuotaApp,
    private readonly projectId: string,
  ) {}

  private keys() {
    const base = `${this.app.config.queuePrefix}:quota:${this.projectId}`
    return [`${base}:bytes`, `${base}:expiry`, `${base}:generation`]
  }

  /** Bytes reserved through PostgreSQL (Redis-less writers), counted by both paths. */
  private async heldInPostgres(db: LimitsDb): Promise<number> {
    const sum = await db.quotaReservation.aggregate({
      where: { projectId: this.projectId, expiresAt: { gt: new Date() } },
      _sum: { bytes: true },
    })
    return Number(sum._sum.bytes ?? 0n)
  }

  private async viaRedis(bytes: number): Promise<Attempt> {
    const redis = this.app.redis
    // a client that is not connected would queue (worker) or refuse (API) the call: fall back at once
    if (redis.status !== 'ready') throw new RedisUnavailable(`Redis is ${redis.status}`)
    const [k1, k2, k3] = this.keys()
    // read the generation first: a release after this read makes the figure below stale
    const generation = (await timed(redis.get(k3), REDIS_RESERVE_TIMEOUT_MS)) ?? '0'
    // PostgreSQL reservations before the rows: one released in between is then counted twice, never missed
    const held = await this.heldInPostgres(this.app.db)
    const [quota, stored] = await Promise.all([
      projectStorageQuota(this.app, this.projectId),
      storageUsed(this.app, this.projectId),
    ])
    const used = stored + held
    const now = Date.now()
    let r: number
    try {
      r = (await timed(
        redis.eval(
          RESERVE,
          3,
          k1,
          k2,
          k3,
          now,
          now + RESERVATION_TTL_MS,
          this.id,
          used,
          bytes,
          quota,
          RESERVATION_TTL_MS * 2,
          generation,
        ) as Promise<number>,
        REDIS_RESERVE_TIMEOUT_MS,
      )) as number
    } catch (err) {
      // the script may still run after a timeout: `release` drops this id from Redis whatever happened
      if (err instanceof RedisUnavailable) this.inRedis = true
      throw err
    }
    if (r >= 0) this.inRedis = true
    if (r === -2) return { kind: 'stale' }
    if (r < 0) return { kind: 'over', used, quota }
    return { kind: 'ok' }
  }

  /** The fallback: checked and inserted under the project's advisory lock, one writer at a time. */
  private async viaPostgres(bytes: number): Promise<Attempt> {
    return this.app.db.$transaction(async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtextextended(${`refit:storage-quota:${this.projectId}`}, 0))`
      const app = { db: tx, config: this.app.config }
      const held = await this.heldInPostgres(tx)
      const quota = await projectStorageQuota(app, this.projectId)
      const used = (await storageUsed(app, this.projectId)) + held
      if (used + bytes > quota) return { kind: 'over', used, quota } as const
      const expiresAt = new Date(Date.now() + RESERVATION_TTL_MS)
      await tx.quotaReservation.upsert({
        where: { id: this.id },
        create: { id: this.id, projectId: this.projectId, bytes: BigInt(bytes), expiresAt },
        update: { bytes: { increment: BigInt(bytes) }, expiresAt },
      })
      this.inPostgres = true
      this.fellBack = true
      return { kind: 'ok' } as const
    })
  }

  /** Reserves `bytes` more, or throws 403 storage_quota_exceeded naming what is stored and the quota. */
  async reserve(bytes: number, what = 'This upload'): Promise<void> {
    const deadline = Date.now() + RESERVE_CONTENTION_MS
    let r: Attempt = { kind: 'stale' }
    for (let attempt = 0; r.kind === 'stale'; attempt++) {
      if (attempt > 0 && Date.now() > deadline)
        throw new AppError('service_unavailable', 'Storage accounting is busy for this project; retry shortly.', {
          headers: { 'retry-after': '2' },
        })
      // other writers releasing all the time: step aside a little, at random, so one of us gets through
      if (attempt >= 3) await new Promise((res) => setTimeout(res, Math.random() * Math.min(200, 10 * attempt)))
      try {
        r = await this.viaRedis(bytes)
      } catch (err) {
        if (!redisUnavailable(err)) throw err
        r = await this.viaPostgres(bytes)
      }
    }
    if (r.kind === 'over')
      throw new AppError(
        'storage_quota_exceeded',
        `${what} needs ${this.reserved + bytes} bytes; the project stores ${r.used} of its ${r.quota}-byte quota (uploads in progress hold more). Delete files or models you no longer need.`,
        {
          param: 'file',
          details: [
            { field: 'storage_used_bytes', message: String(r.used) },
            { field: 'storage_quota_bytes', message: String(r.quota) },
          ],
          // refused mid-body: do not read the rest of an upload nobody will keep
          headers: { connection: 'close' },
        },
      )
    this.reserved += bytes
  }

  async release(): Promise<void> {
    if (this.inPostgres) {
      this.inPostgres = false
      await this.app.db.quotaReservation.deleteMany({ where: { id: this.id } })
    }
    if (!this.inRedis) return
    this.inRedis = false
    const [k1, k2, k3] = this.keys()
    // Redis down: the worker's client sends this once it is back (the API's drops it); either way an
    // unreleased reservation expires after RESERVATION_TTL_MS, refusing too much meanwhile, never too little
    await timed(
      this.app.redis.multi().hdel(k1, this.id).zrem(k2, this.id).incr(k3).exec(),
      REDIS_RESERVE_TIMEOUT_MS,
    ).catch(() => {})
  }

  /**
   * `source` piped through `gate()`. pipeline, not pipe: an error or a premature end of the source (a
   * truncated multipart body) destroys the gate too, so the reader sees it instead of waiting forever.
   */
  through(source: Readable): Readable {
    return pipeline(source, this.gate(), () => {
      // the error reaches the reader of the returned stream
    })
  }

  /**
   * A pass-through that reserves ahead of the bytes flowing through it (RESERVE_CHUNK_BYTES at a time) and
   * fails the stream with storage_quota_exceeded when the project has no room left: nothing past the
   * quota reaches storage.
   */
  gate(): Transform {
    let seen = 0
    return new Transform({
      transform: (chunk: Buffer, _enc, cb) => {
        seen += chunk.length
        if (seen <= this.reserved) return cb(null, chunk)
        const need = seen - this.reserved
        // a chunk ahead when there is room for it, else exactly what this chunk needs
        this.reserve(Math.max(RESERVE_CHUNK_BYTES, need))
          .catch((err) => (need < RESERVE_CHUNK_BYTES ? this.reserve(need) : Promise.reject(err)))
          .then(
            () => cb(null, chunk),
            (err) => cb(err),
          )
      },
    })
  }
}

/**
 * Reserves before an upload is read: the Content-Length, less MULTIPART_SLACK_BYTES of framing, when the
 * client sent one (refused at once when it cannot fit), else nothing yet. The file's bytes themselves are
 * reserved as they flow (`through()`), so the quota holds to the byte either way. Release once the bytes
 * are recorded or removed.
 */
export async function reserveUpload(app: QuotaApp, projectId: string, contentLength: number | undefined) {
  const r = new StorageReservation(app, projectId)
  const announced = (contentLength ?? 0) - MULTIPART_SLACK_BYTES
  if (announced > 0) await r.reserve(announced)
  return r
}

/**
 * The parts of a one-file upload (a dataset file or a model zip, from the project or the admin routes),
 * read under busboy's limits: the file up to MAX_UPLOAD_BYTES; one file part, so a second one is refused
 * before its bytes are read; 8 text fields, room for the 5 that either upload knows plus a few that the
 * service then names in its `Unknown multipart field` refusal rather than a bare limit (beyond them a body
 * of many tiny fields is cut off); and 10 parts in all, a backstop just over the 1 + 8 those allow.
 */
export function uploadParts(req: FastifyRequest) {
  return req.parts({ limits: { fileSize: req.server.config.maxUploadBytes, files: 1, fields: 8, parts: 10 } })
}

/** The request's Content-Length, when it sent a valid one. */
export function contentLength(req: FastifyRequest): number | undefined {
  const n = Number(req.headers['content-length'])
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

/**
 * Bytes of every file under the local directory `dir` (a checkpoint or model a training process wrote),
 * reserved before the directory is stored and recorded.
 */
export async function localDirBytes(dir: string): Promise<number> {
  let n = 0
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) n += await localDirBytes(p)
    else if (e.isFile()) n += (await stat(p)).size
  }
  return n
}

/** True for the refusal `reserve` throws when the project has no room left. */
export function isQuotaRefusal(err: unknown): err is AppError {
  return err instanceof AppError && err.code === 'storage_quota_exceeded'
}

// Exact storage quota: bytes are reserved before they are written, atomically across API processes, so
// concurrent uploads cannot together pass the quota (count-then-act let 30 uploads store 10x of it).
//
// A project's in-flight reservations live in Redis: a hash reservation id -> bytes and a sorted set
// reservation id -> expiry, so a process that dies mid-upload frees its reservation after RESERVATION_TTL_MS.
// The Lua script compares stored bytes (from PostgreSQL, passed in) + reserved + asked with the quota and
// adds the reservation in one step. A finished upload records its row first, then drops its reservation,
// so for a moment its bytes count twice (refusing, never admitting, too much). Every release bumps a
// generation number; a reservation whose stored-bytes figure was read before the latest release (it may
// miss the released upload's row while no longer seeing its reservation) is refused by the script and
// tried again with a fresh figure.
import { randomUUID } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { pipeline, type Readable, Transform } from 'node:stream'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../../errors.js'
import { projectStorageQuota, storageUsed } from './limits-service.js'

/** An upload reserves this much more each time it passes what it has reserved (when no Content-Length said). */
export const RESERVE_CHUNK_BYTES = 8 * 1024 * 1024
/**
 * What a multipart body may hold besides the file (boundaries, part headers, a few short fields): a
 * Content-Length more than this past the room left is refused before the body is read.
 */
export const MULTIPART_SLACK_BYTES = 16 * 1024
/** A reservation not renewed for this long is dropped (its process died). */
export const RESERVATION_TTL_MS = 10 * 60_000

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

type QuotaApp = Pick<FastifyInstance, 'db' | 'config' | 'redis'>

/** Bytes a project may still write, reserved in steps; `release()` once the bytes are recorded (or removed). */
export class StorageReservation {
  private readonly id = randomUUID()
  reserved = 0

  constructor(
    private readonly app: QuotaApp,
    private readonly projectId: string,
  ) {}

  private keys() {
    const base = `${this.app.config.queuePrefix}:quota:${this.projectId}`
    return [`${base}:bytes`, `${base}:expiry`, `${base}:generation`]
  }

  /** Reserves `bytes` more, or throws 403 storage_quota_exceeded naming what is stored and the quota. */
  async reserve(bytes: number, what = 'This upload'): Promise<void> {
    const [k1, k2, k3] = this.keys()
    let r = -2
    let used = 0
    let quota = 0
    for (let attempt = 0; r === -2; attempt++) {
      if (attempt === 50)
        throw new AppError('service_unavailable', 'Storage accounting is busy for this project; retry shortly.', {
          headers: { 'retry-after': '2' },
        })
      // read the generation first: a release after this read makes the figure below stale
      const generation = (await this.app.redis.get(k3)) ?? '0'
      ;[quota, used] = await Promise.all([
        projectStorageQuota(this.app, this.projectId),
        storageUsed(this.app, this.projectId),
      ])
      const now = Date.now()
      r = (await this.app.redis.eval(
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
      )) as number
    }
    if (r < 0)
      throw new AppError(
        'storage_quota_exceeded',
        `${what} needs ${this.reserved + bytes} bytes; the project stores ${used} of its ${quota}-byte quota (uploads in progress hold more). Delete files or models you no longer need.`,
        {
          param: 'file',
          details: [
            { field: 'storage_used_bytes', message: String(used) },
            { field: 'storage_quota_bytes', message: String(quota) },
          ],
          // refused mid-body: do not read the rest of an upload nobody will keep
          headers: { connection: 'close' },
        },
      )
    this.reserved += bytes
  }

  async release(): Promise<void> {
    if (!this.reserved) return
    const [k1, k2, k3] = this.keys()
    await this.app.redis
      .multi()
      .hdel(k1, this.id)
      .zrem(k2, this.id)
      .incr(k3)
      .exec()
      .catch(() => {})
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

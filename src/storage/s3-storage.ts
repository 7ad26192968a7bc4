// The `s3` storage driver: objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...). Uploads are
// streamed to a local temporary file first (hashed and size-checked on the way), then sent with a known
// length, so a cut-off upload never leaves an object behind. Keys are write-once in Refit (an id in every
// key), so a materialized copy in the local cache stays valid until the key is removed.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { type Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3'
import type { S3Settings } from '../config.js'
import { checkKey, comparePaths, type Storage, type StorageEntry, type StoredObject } from './storage.js'

const notFound = (key: string) => Object.assign(new Error(`no stored object at ${key}`), { code: 'ENOENT' })

export class S3Storage implements Storage {
  readonly driver = 's3' as const
  readonly localRoot: string
  readonly bucket: string
  private readonly client: S3Client

  constructor(localRoot: string, settings: S3Settings) {
    this.localRoot = resolve(localRoot)
    this.bucket = settings.bucket
    this.client = new S3Client({
      region: settings.region,
      endpoint: settings.endpoint ?? undefined,
      forcePathStyle: settings.forcePathStyle,
      // Default CRC checksums send streamed bodies aws-chunked, which many S3-compatible servers store verbatim.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      credentials:
        settings.accessKeyId && settings.secretAccessKey
          ? { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey }
          : undefined,
    })
  }

  async init(): Promise<void> {
    await mkdir(join(this.localRoot, 'tmp'), { recursive: true })
  }

  tmpPath(): string {
    return join(this.localRoot, 'tmp', `${Date.now()}-${randomBytes(8).toString('hex')}`)
  }

  workPath(key: string): string {
    const abs = resolve(this.localRoot, checkKey(key))
    if (!abs.startsWith(this.localRoot + sep)) throw new Error(`storage key escapes root: ${key}`)
    return abs
  }

  keyOf(localPath: string): string {
    return relative(this.localRoot, localPath).split(sep).join('/')
  }

  async put(key: string, body: Buffer | string): Promise<StoredObject> {
    const buf = typeof body === 'string' ? Buffer.from(body) : body
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: checkKey(key), Body: buf, ContentLength: buf.length }),
    )
    return { path: key, bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') }
  }

  async writeStream(key: string, source: Readable): Promise<StoredObject> {
    const k = checkKey(key)
    const tmp = this.tmpPath()
    const hash = createHash('sha256')
    let bytes = 0
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk)
        bytes += chunk.length
        cb(null, chunk)
      },
    })
    try {
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx' }))
      await this.putFile(k, tmp, bytes)
      // Keep the bytes as the cached copy: the worker that validates an upload usually runs here too.
      await this.cache(tmp, this.workPath(k))
    } finally {
      await rm(tmp, { force: true })
    }
    return { path: key, bytes, sha256: hash.digest('hex') }
  }

  async read(key: string): Promise<Readable> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: checkKey(key) }))
      return res.Body as Readable
    } catch (err) {
      if (isMissing(err)) throw notFound(key)
      throw err
    }
  }

  async remove(key: string): Promise<void> {
    const k = checkKey(key)
    const keys = [...(await this.list(k)).map((e) => e.key)]
    for (let i = 0; i < keys.length; i += 1000) {
      await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true },
        }),
      )
    }
    await rm(this.workPath(k), { recursive: true, force: true })
  }

  async exists(key: string): Promise<boolean> {
    return (await this.list(checkKey(key), 1)).length > 0
  }

  async list(prefix: string, max = Number.POSITIVE_INFINITY): Promise<StorageEntry[]> {
    const p = prefix ? checkKey(prefix) : ''
    const out: StorageEntry[] = []
    let token: string | undefined
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: p, ContinuationToken: token }),
      )
      for (const o of page.Contents ?? []) {
        if (!o.Key) continue
        // `files/ab` must not list `files/abc`: only the key itself and what is under `key/`
        if (p && o.Key !== p && !o.Key.startsWith(`${p}/`)) continue
        out.push({ key: o.Key, bytes: o.Size ?? 0 })
        if (out.length >= max) return out
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    return out.sort((a, b) => comparePaths(a.key, b.key))
  }

  async digest(key: string): Promise<StoredObject> {
    const k = checkKey(key)
    const entries = await this.list(k)
    if (!entries.length) throw notFound(key)
    const hash = createHash('sha256')
    let bytes = 0
    for (const e of entries) {
      if (e.key !== k) hash.update(`${e.key.slice(k.length + 1)}\0`)
      for await (const chunk of await this.read(e.key)) hash.update(chunk as Buffer)
      bytes += e.bytes
    }
    return { path: key, bytes, sha256: hash.digest('hex') }
  }

  /** Removes local temporary files, and temporary objects (`tmp/…`) older than `maxAgeMs`. */
  async sweepTmp(maxAgeMs: number): Promise<number> {
    let removed = 0
    const dir = join(this.localRoot, 'tmp')
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name)
      const s = await stat(p).catch(() => null)
      if (s && Date.now() - s.mtimeMs > maxAgeMs) {
        await rm(p, { recursive: true, force: true })
        removed++
      }
    }
    let token: string | undefined
    const old: string[] = []
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: 'tmp/', ContinuationToken: token }),
      )
      for (const o of page.Contents ?? [])
        if (o.Key && o.LastModified && Date.now() - o.LastModified.getTime() > maxAgeMs) old.push(o.Key)
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
    for (const k of old) await this.remove(k)
    return removed + old.length
  }

  /** Downloads `key` (an object, or every object under `key/`) into the cache once; later calls reuse it. */
  async localPath(key: string): Promise<string> {
    const k = checkKey(key)
    const target = this.workPath(k)
    if (await stat(target).catch(() => null)) return target
    const entries = await this.list(k)
    if (!entries.length) throw notFound(key)
    const tmp = this.tmpPath()
    try {
      if (entries.length === 1 && entries[0].key === k) {
        await this.download(k, tmp)
      } else {
        for (const e of entries) await this.download(e.key, join(tmp, e.key.slice(k.length + 1)))
      }
      await this.cache(tmp, target)
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
    return target
  }

  async putDir(key: string, dir: string): Promise<StoredObject> {
    const k = checkKey(key)
    const files: string[] = []
    const walk = async (p: string): Promise<void> => {
      for (const name of await readdir(p)) {
        const q = join(p, name)
        if ((await stat(q)).isDirectory()) await walk(q)
        else files.push(relative(dir, q).split(sep).join('/'))
      }
    }
    await walk(dir)
    files.sort(comparePaths)
    const hash = createHash('sha256')
    let bytes = 0
    for (const rel of files) {
      const abs = join(dir, ...rel.split('/'))
      const size = (await stat(abs)).size
      await this.putFile(`${k}/${rel}`, abs, size)
      hash.update(`${rel}\0`)
      for await (const chunk of createReadStream(abs)) hash.update(chunk as Buffer)
      bytes += size
    }
    const target = this.workPath(k)
    if (resolve(dir) !== target) await this.cache(dir, target)
    return { path: key, bytes, sha256: hash.digest('hex') }
  }

  private async putFile(key: string, file: string, bytes: number) {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: createReadStream(file), ContentLength: bytes }),
    )
  }

  private async download(key: string, dest: string) {
    await mkdir(dirname(dest), { recursive: true })
    await pipeline(await this.read(key), createWriteStream(dest, { flags: 'wx' }))
  }

  /** Moves a complete local copy into the cache; another process that got there first wins. */
  private async cache(from: string, target: string) {
    await mkdir(dirname(target), { recursive: true })
    try {
      await rename(from, target)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EISDIR') throw err
    }
  }
}

function isMissing(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404
}

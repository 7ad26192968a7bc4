// The `fs` storage driver: artifacts and uploads on the local filesystem. Every write goes to a temporary
// path first and is renamed into place, so a crash never leaves a half-written file under a final name;
// the sweeper removes leftovers in tmp/. Local paths are the stored files themselves.
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { cp, mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises'
import { dirname, join, relative, resolve, sep } from 'node:path'
import type { Readable } from 'node:stream'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { checkKey, comparePaths, type Storage, type StorageEntry, type StoredObject } from './storage.js'

export type { StoredObject } from './storage.js'

export class LocalStorage implements Storage {
  readonly driver = 'fs' as const
  readonly root: string

  constructor(root: string) {
    this.root = resolve(root)
  }

  get localRoot(): string {
    return this.root
  }

  async init(): Promise<void> {
    for (const d of ['files', 'jobs', 'models', 'tmp']) await mkdir(join(this.root, d), { recursive: true })
  }

  /** Absolute path for a storage-relative key; refuses keys that leave the root. */
  resolve(key: string): string {
    const abs = resolve(this.root, key)
    if (abs !== this.root && !abs.startsWith(this.root + sep)) throw new Error(`storage key escapes root: ${key}`)
    return abs
  }

  key(abs: string): string {
    return relative(this.root, abs)
  }

  tmpPath(): string {
    return join(this.root, 'tmp', `${Date.now()}-${randomBytes(8).toString('hex')}`)
  }

  /**
   * Streams `source` to `key`, hashing on the way, never holding the whole body in memory.
   * `maxBytes` aborts with FileTooLargeError once exceeded; the temporary file is removed on any failure.
   */
  async writeStream(key: string, source: Readable): Promise<StoredObject> {
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
      const dest = this.resolve(key)
      await mkdir(dirname(dest), { recursive: true })
      await rename(tmp, dest)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    return { path: key, bytes, sha256: hash.digest('hex') }
  }

  createReadStream(key: string) {
    return createReadStream(this.resolve(key))
  }

  async put(key: string, body: Buffer | string): Promise<StoredObject> {
    const tmp = this.tmpPath()
    try {
      await writeFile(tmp, body, { flag: 'wx' })
      const dest = this.resolve(checkKey(key))
      await mkdir(dirname(dest), { recursive: true })
      await rename(tmp, dest)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
    const buf = typeof body === 'string' ? Buffer.from(body) : body
    return { path: key, bytes: buf.length, sha256: createHash('sha256').update(buf).digest('hex') }
  }

  async read(key: string): Promise<Readable> {
    const abs = this.resolve(key)
    const s = await stat(abs)
    if (!s.isFile()) throw Object.assign(new Error(`not a stored object: ${key}`), { code: 'ENOENT' })
    return createReadStream(abs)
  }

  async list(prefix: string): Promise<StorageEntry[]> {
    const base = prefix ? this.resolve(checkKey(prefix)) : this.root
    const out: StorageEntry[] = []
    const visit = async (p: string): Promise<void> => {
      const s = await stat(p).catch(() => null)
      if (!s) return
      if (s.isDirectory()) {
        for (const name of await readdir(p)) {
          if (p === this.root && name === 'tmp') continue
          await visit(join(p, name))
        }
      } else out.push({ key: relative(this.root, p).split(sep).join('/'), bytes: s.size })
    }
    await visit(base)
    return out.sort((a, b) => comparePaths(a.key, b.key))
  }

  async localPath(key: string): Promise<string> {
    return this.resolve(key)
  }

  workPath(key: string): string {
    return this.resolve(checkKey(key))
  }

  keyOf(localPath: string): string {
    return relative(this.root, localPath).split(sep).join('/')
  }

  /** Moves `dir` into place (a no-op when a process wrote it at `workPath(key)` already). */
  async putDir(key: string, dir: string): Promise<StoredObject> {
    const dest = this.workPath(key)
    if (resolve(dir) !== dest) {
      await mkdir(dirname(dest), { recursive: true })
      await rm(dest, { recursive: true, force: true })
      try {
        await rename(dir, dest)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err
        await cp(dir, dest, { recursive: true })
        await rm(dir, { recursive: true, force: true })
      }
    }
    return this.digest(key)
  }

  async remove(key: string): Promise<void> {
    await rm(this.resolve(key), { recursive: true, force: true })
  }

  async exists(key: string): Promise<boolean> {
    try {
      await stat(this.resolve(key))
      return true
    } catch {
      return false
    }
  }

  /** sha256 and total size of a file, or of a directory's files in sorted order (name + content). */
  async digest(key: string): Promise<StoredObject> {
    const abs = this.resolve(key)
    const hash = createHash('sha256')
    let bytes = 0
    const visit = async (p: string): Promise<void> => {
      const s = await stat(p)
      if (s.isDirectory()) {
        for (const name of (await readdir(p)).sort()) await visit(join(p, name))
        return
      }
      if (p !== abs) hash.update(`${relative(abs, p).split(sep).join('/')}\0`)
      bytes += s.size
      for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer)
    }
    await visit(abs)
    return { path: key, bytes, sha256: hash.digest('hex') }
  }

  /** Removes temporary uploads older than `maxAgeMs` (left by a process killed mid-upload). */
  async sweepTmp(maxAgeMs: number): Promise<number> {
    const dir = join(this.root, 'tmp')
    let removed = 0
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const p = join(dir, name)
      const s = await stat(p).catch(() => null)
      if (s && Date.now() - s.mtimeMs > maxAgeMs) {
        await rm(p, { recursive: true, force: true })
        removed++
      }
    }
    return removed
  }
}

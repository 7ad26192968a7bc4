// The one storage interface: uploads, model copies, checkpoints and fine-tuned models live behind it, on
// the local filesystem (`fs`, the default) or in an S3-compatible bucket (`s3`). Keys are `/`-separated
// and relative (`files/<id>`, `models/<id>/model.json`); a "directory" is every object under `key/`.
//
// TensorFlow.js and the dataset readers need local paths: `localPath` materializes a key (an object or a
// whole prefix) into the local root, and `putDir` stores a directory a training process wrote under
// `workPath(key)`. With `fs` both are the stored files themselves; with `s3` the local root is a cache.
import type { Readable } from 'node:stream'

/** What a write or a digest reports: the key, total bytes and sha256 (see `digest` for directories). */
export interface StoredObject {
  path: string
  bytes: number
  sha256: string
}

/** One stored object as `list` returns it. */
export interface StorageEntry {
  key: string
  bytes: number
}

/** Artifact and upload storage; every driver passes test/storage/contract.test.ts. */
export interface Storage {
  readonly driver: 'fs' | 's3'
  /** local directory for temporary files and, with `s3`, the cache of materialized keys */
  readonly localRoot: string
  init(): Promise<void>
  /** stores a small body at `key` */
  put(key: string, body: Buffer | string): Promise<StoredObject>
  /** streams `source` to `key`, hashing on the way; nothing appears under `key` unless the write completes */
  writeStream(key: string, source: Readable): Promise<StoredObject>
  /** the object's bytes; rejects when there is no such object */
  read(key: string): Promise<Readable>
  /** removes the object at `key` and every object under `key/`; a missing key is not an error */
  remove(key: string): Promise<void>
  /** true when an object is at `key` or under `key/` */
  exists(key: string): Promise<boolean>
  /**
   * sha256 and total size of the object at `key`, or of every object under `key/` in path order, each
   * hashed as `<relative path>\0<bytes>` (the same figure whichever driver stored them).
   */
  digest(key: string): Promise<StoredObject>
  /** the object at `prefix` and every object under `prefix/` (all objects when empty), in path order */
  list(prefix: string): Promise<StorageEntry[]>
  /** removes temporary files older than `maxAgeMs` (left by a process killed mid-write); returns how many */
  sweepTmp(maxAgeMs: number): Promise<number>
  /** a fresh local temporary path (not created) */
  tmpPath(): string
  /** a local path holding `key` (a file, or a directory for a prefix), downloaded first if need be */
  localPath(key: string): Promise<string>
  /** the local path where a process writes what `putDir(key, …)` will store */
  workPath(key: string): string
  /** stores the local directory `dir` under `key/` and returns its digest */
  putDir(key: string, dir: string): Promise<StoredObject>
  /** the key of a path under `localRoot` (inverse of `workPath`) */
  keyOf(localPath: string): string
}

/** Orders keys segment by segment, as a recursive walk of sorted directories visits them. */
export function comparePaths(a: string, b: string): number {
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] < y[i] ? -1 : 1
  return x.length - y.length
}

/** Refuses keys that are absolute, empty segments or climb out (`..`). */
export function checkKey(key: string): string {
  const k = key.replace(/\\/g, '/').replace(/\/+$/, '')
  if (k.startsWith('/') || k.split('/').some((s) => s === '..' || s === '.')) throw new Error(`bad storage key: ${key}`)
  return k
}

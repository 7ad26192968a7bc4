// The feature cache across jobs: backbone features a transfer job computed for a file, stored through the
// Storage driver (fs or s3, shared by every worker) and recorded in `feature_cache_entries`, so that a later
// job on the same file and backbone trains its head without decoding an image or loading the backbone.
//
// Key: (file id, file sha256, backbone sha256, preprocessing). The backbone's identity is the sha256 of its
// model.json and weight files, its cut layer and how the features are computed: the worker's backend and
// whether the frozen graph path runs (with the graph compiler's version): any change in weights, cut,
// backend or compilation is another entry, so a wasm worker never trains on a tensorflow worker's features. The training process checks every entry's bytes against
// the recorded sha256 and never uses one that does not match (features_corrupt: the entry is deleted and the
// job computes and stores the features again).
//
// Bytes: all entries together stay under FEATURE_CACHE_BYTES, least recently used evicted first; each
// project's entries count toward its storage quota and are reserved in it (limits/storage-reservation.ts, as
// uploads and checkpoints are) before they are stored: features that do not fit are not cached, the job
// trains on the ones it computed in memory and its events say why.
// Deleting a file deletes its features.
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readFile, rm, stat } from 'node:fs/promises'
import path from 'node:path'
import type { io } from '@tensorflow/tfjs'
import type { Config } from '../../config.js'
import type { Db } from '../../db/client.js'
import { GRAPH_COMPILER_VERSION } from '../../engine/graph/compile.js'
import { compiledGraphModelSha256, isGraphModelMeta } from '../../engine/graph/graph-model-key.js'
import type {
  ChildMessage,
  FeatureCacheSlot,
  GraphSettings,
  ModelMetadata,
  TrainRequest,
} from '../../engine/protocol.js'
import type { File } from '../../generated/prisma/client.js'
import { newId } from '../../lib/ids.js'
import type { Storage } from '../../storage/storage.js'
import { isQuotaRefusal, type QuotaApp, StorageReservation } from '../limits/storage-reservation.js'

/** What the cache needs of a worker (or of the API, for deletes). */
export interface FeatureCacheDeps {
  db: Db
  storage: Storage
  config: Pick<Config, 'featureCacheBytes'>
}

type Which = 'training' | 'validation'

const identities = new Map<string, { mtimeMs: number; sha256: string }>()

/**
 * How a worker computes features: its backend and forward path, e.g. `tensorflow/graph-v1` or `wasm/eager`
 * (the graph path runs on the tensorflow backend only, and not with REFIT_FROZEN_GRAPH=off).
 */
export function featurePath(backend: string, graphMode: GraphSettings['mode']): string {
  return `${backend}/${backend === 'tensorflow' && graphMode !== 'off' ? `graph-v${GRAPH_COMPILER_VERSION}` : 'eager'}`
}

/**
 * sha256 of a backbone: its model.json and weight files, the cut layer, and how features are computed
 * (`featurePath`). Memoized per directory while model.json is unchanged.
 */
export async function backboneSha256(dir: string, featureLayer: string, forward: string) {
  const modelJson = path.join(dir, 'model.json')
  const { mtimeMs } = await stat(modelJson)
  const memoKey = `${dir}\0${featureLayer}\0${forward}`
  const known = identities.get(memoKey)
  if (known && known.mtimeMs === mtimeMs) return known.sha256
  const hash = createHash('sha256')
  const json = await readFile(modelJson)
  hash.update(json)
  for (const group of (JSON.parse(json.toString('utf8')) as io.ModelJSON).weightsManifest)
    for (const p of group.paths) hash.update(await readFile(path.join(dir, p)))
  hash.update(`\0cut:${featureLayer}\0forward:${forward}`)
  const sha256 = hash.digest('hex')
  identities.set(memoKey, { mtimeMs, sha256 })
  return sha256
}

/** sha256 of how inputs become the backbone's input: preprocessing and input shape. */
export function preprocessingKey(meta: Pick<ModelMetadata, 'preprocessing' | 'input_shape'>): string {
  return createHash('sha256')
    .update(JSON.stringify({ preprocessing: meta.preprocessing, input_shape: meta.input_shape }))
    .digest('hex')
}

interface EntryKey {
  fileId: string
  fileSha256: string
  backboneSha256: string
  preprocessing: string
}

const objectKey = (projectId: string, k: EntryKey) =>
  `features/${projectId}/${k.fileId}/${k.backboneSha256.slice(0, 32)}-${k.preprocessing.slice(0, 16)}.bin`

/** One job's use of the cache: the slots its training process gets, and what to do with what it reports. */
export interface JobFeatureCache {
  slots: NonNullable<TrainRequest['featureCache']>
  /** stores computed features (a `features` message); returns a sentence for the job's events */
  store(msg: Extract<ChildMessage, { type: 'features' }>): Promise<string>
  /** forgets an entry that did not verify (a `features_corrupt` message) */
  corrupt(msg: Extract<ChildMessage, { type: 'features_corrupt' }>): Promise<void>
}

/**
 * Looks up the cached features of a transfer job's files. Null when the cache does not apply: not a transfer
 * from a model directory, weights from another job's checkpoint (features would not be the base's), or
 * FEATURE_CACHE_BYTES=0.
 */
export async function prepareJobFeatureCache(
  deps: FeatureCacheDeps & QuotaApp,
  job: { projectId: string; initCheckpointId: string | null; trainingFile: File; validationFile: File | null },
  request: TrainRequest,
  /** the worker's `featurePath` */
  forward: string,
): Promise<JobFeatureCache | null> {
  const { db, storage, config } = deps
  if (config.featureCacheBytes <= 0 || request.method.type !== 'transfer' || !request.baseModelDir) return null
  if (job.initCheckpointId) return null
  const meta = JSON.parse(await readFile(path.join(request.baseModelDir, 'metadata.json'), 'utf8')) as ModelMetadata
  if (!meta.feature_layer) return null
  const featureLayer = meta.feature_layer
  const baseDir = request.baseModelDir
  // a TF.js graph-model base: keyed by its compiled graph's sha256, which the graph cache records once a training
  // process compiled it (the first job computes and stores; its key is resolved again when it stores)
  const graphCache = request.graph?.cacheDir ?? null
  const graphBase = isGraphModelMeta(meta)
  if (graphBase && !graphCache) return null
  const graphSha = async () => (graphBase ? compiledGraphModelSha256(baseDir, featureLayer, graphCache!) : null)
  const graphForward = (compiled: string | null) => (graphBase ? `${forward}/graph-model:${compiled}` : forward)
  const firstGraph = await graphSha()
  const backbone = await backboneSha256(baseDir, featureLayer, graphForward(firstGraph))
  const preprocessing = preprocessingKey(meta)
  const keys = new Map<Which, EntryKey & { file: File }>()
  const slot = async (which: Which, file: File): Promise<FeatureCacheSlot> => {
    const key = { fileId: file.id, fileSha256: file.sha256, backboneSha256: backbone, preprocessing }
    keys.set(which, { ...key, file })
    const writePath = path.join(request.outputDir, 'features', `${which}.bin`)
    const entry =
      graphBase && !firstGraph
        ? null
        : await db.featureCacheEntry.findUnique({ where: { fileId_fileSha256_backboneSha256_preprocessing: key } })
    if (!entry) return { cached: null, writePath }
    let local: string
    try {
      local = await storage.localPath(entry.path)
    } catch {
      // the object is gone (a concurrent eviction, a lost bucket object): the entry is worthless
      await db.featureCacheEntry.deleteMany({ where: { id: entry.id } })
      return { cached: null, writePath }
    }
    await db.featureCacheEntry.updateMany({ where: { id: entry.id }, data: { lastUsedAt: new Date() } })
    return { cached: { path: local, sha256: entry.sha256 }, writePath }
  }
  const slots: JobFeatureCache['slots'] = {
    training: await slot('training', job.trainingFile),
    ...(job.validationFile ? { validation: await slot('validation', job.validationFile) } : {}),
  }

  return {
    slots,
    async store(msg) {
      let key = keys.get(msg.which)
      if (!key) return `${msg.which} features not cached: no slot`
      // reserved before a byte is stored, released once the entry's row counts them
      const held = new StorageReservation(deps, job.projectId)
      try {
        if (graphBase) {
          const compiled = await graphSha()
          if (!compiled)
            return `${msg.which} features not cached: the graph base's compiled graph is not in the graph cache`
          key = { ...key, backboneSha256: await backboneSha256(baseDir, featureLayer, graphForward(compiled)) }
        }
        try {
          await held.reserve(msg.bytes, `Caching the ${msg.which} features`)
        } catch (err) {
          const why = isQuotaRefusal(err) ? err.message : `storage accounting unavailable (${(err as Error).message})`
          return `${msg.which} features not cached (this job trains on the ones it computed in memory): ${why}`
        }
        const target = objectKey(job.projectId, key)
        const stored = await storage.writeStream(target, createReadStream(msg.path))
        if (stored.sha256 !== msg.sha256) {
          await storage.remove(target)
          return `${msg.which} features not cached: the stored copy's sha256 differs from the computed one`
        }
        const data = { path: target, sha256: stored.sha256, bytes: BigInt(stored.bytes), rows: msg.rows }
        await db.featureCacheEntry.upsert({
          where: { fileId_fileSha256_backboneSha256_preprocessing: pick(key) },
          create: { id: newId('feat'), projectId: job.projectId, ...pick(key), ...data },
          update: { ...data, lastUsedAt: new Date() },
        })
        // The file may have been deleted while the job ran: its features go with it.
        const file = await db.file.findUnique({ where: { id: key.fileId }, select: { deletedAt: true } })
        if (!file || file.deletedAt) {
          await deleteFileFeatures(deps, job.projectId, key.fileId)
          return `${msg.which} features not cached: the file was deleted`
        }
        const evicted = await evictFeatures(deps)
        return `${msg.which} features cached (${stored.bytes} bytes)${evicted ? `; ${evicted} least recently used entries evicted` : ''}`
      } finally {
        await held.release()
        await rm(msg.path, { force: true })
      }
    },
    async corrupt(msg) {
      const key = keys.get(msg.which)
      if (!key) return
      const entry = await db.featureCacheEntry.findUnique({
        where: { fileId_fileSha256_backboneSha256_preprocessing: pick(key) },
      })
      // only the entry this job was given: another job may have stored a fresh one meanwhile
      if (!entry || entry.sha256 !== slots[msg.which]?.cached?.sha256) return
      await db.featureCacheEntry.deleteMany({ where: { id: entry.id } })
      await storage.remove(entry.path)
    },
  }
}

const pick = ({ fileId, fileSha256, backboneSha256, preprocessing }: EntryKey): EntryKey => ({
  fileId,
  fileSha256,
  backboneSha256,
  preprocessing,
})

/** Bytes of a project's cached features (they count toward its storage quota). */
export async function featureBytes(db: Pick<Db, 'featureCacheEntry'>, projectId: string): Promise<number> {
  const sum = await db.featureCacheEntry.aggregate({ where: { projectId }, _sum: { bytes: true } })
  return Number(sum._sum.bytes ?? 0n)
}

/** Deletes entries, least recently used first, until all entries fit FEATURE_CACHE_BYTES; returns how many. */
export async function evictFeatures(deps: FeatureCacheDeps): Promise<number> {
  const { db, storage, config } = deps
  const sum = await db.featureCacheEntry.aggregate({ _sum: { bytes: true } })
  let total = Number(sum._sum.bytes ?? 0n)
  let evicted = 0
  while (total > config.featureCacheBytes) {
    const oldest = await db.featureCacheEntry.findMany({ orderBy: { lastUsedAt: 'asc' }, take: 50 })
    if (!oldest.length) break
    for (const e of oldest) {
      if (total <= config.featureCacheBytes) break
      // the row goes first: a job that looks the entry up now finds nothing rather than a missing object
      const gone = await db.featureCacheEntry.deleteMany({ where: { id: e.id } })
      await storage.remove(e.path)
      if (gone.count) evicted++
      total -= Number(e.bytes)
    }
  }
  return evicted
}

/** Deletes every cached feature of a file (rows and stored objects). */
export async function deleteFileFeatures(
  deps: Pick<FeatureCacheDeps, 'db' | 'storage'>,
  projectId: string,
  fileId: string,
): Promise<void> {
  await deps.db.featureCacheEntry.deleteMany({ where: { fileId } })
  await deps.storage.remove(`features/${projectId}/${fileId}`)
}

// The training process's side of the feature cache across jobs: it reads the cached features its request
// points at (trusting only bytes that hash to the recorded sha256), and writes the features it computes where
// the worker will pick them up. The worker (src/modules/features) owns the entries, the storage and eviction.
import type { LoadedDataset } from '../datasets/types.js'
import { type CachedFeatures, CorruptFeatureFile, readFeatureFile, writeFeatureFile } from './feature-file.js'
import { type FrozenForward, forwardEventData } from './graph/forward.js'
import { keptForNextJob } from './kept-for-next-job.js'
import type { ChildMessage, FeatureCacheSlot, TrainRequest } from './protocol.js'
import type { TransferFeatureCache } from './transfer.js'
import type { FeatureSet } from './transfer-data.js'

type Which = 'training' | 'validation'

/** Verified cached features of the request's datasets, and the sink for computed ones; null without a cache. */
export async function openFeatureCache(
  req: TrainRequest,
  send: (m: ChildMessage) => Promise<void>,
): Promise<TransferFeatureCache | null> {
  const slots = req.featureCache
  if (!slots) return null
  const read = async (which: Which, slot: FeatureCacheSlot | undefined): Promise<CachedFeatures | null> => {
    if (!slot?.cached) return null
    try {
      // a sweep's next trial in the same process takes the verified copy its previous trial read (same sha256)
      const { path, sha256 } = slot.cached
      return await keptForNextJob.get(`features:${sha256}`, () => readFeatureFile(path, sha256), `${which} features`)
    } catch (err) {
      if (!(err instanceof CorruptFeatureFile)) throw err
      await send({ type: 'features_corrupt', which, reason: err.message })
      await send({
        type: 'event',
        level: 'warn',
        message: `cached ${which} features did not verify (${err.message}): not used, computed again`,
        data: { which },
      })
      return null
    }
  }
  const train = await read('training', slots.training)
  const validation = req.validation ? await read('validation', slots.validation) : null
  return {
    train,
    validation,
    async computed(which, features) {
      const slot = which === 'training' ? slots.training : slots.validation
      if (!slot) return
      const { sha256, bytes } = await writeFeatureFile(slot.writePath, features)
      await send({ type: 'features', which, path: slot.writePath, sha256, bytes, rows: features.set.rows })
    },
  }
}

/** Cached features fit a loaded dataset when they hold its rows, labels and classes (same file and backbone). */
export function usable(c: CachedFeatures | null | undefined, ds: LoadedDataset): FeatureSet | null {
  if (!c || c.set.rows !== ds.rows || c.classes.join('\u0000') !== ds.classes.join('\u0000')) return null
  return c.set.labels.every((l, i) => l === ds.y[i]) ? c.set : null
}

/** What `gatherFeatures` needs: the datasets, the cache, and how to compute what it does not hold. */
export interface GatherFeatures {
  cache: TransferFeatureCache | null | undefined
  train: LoadedDataset
  /** the validation file as loaded (cache entries hold its own classes) and aligned to the training classes */
  validation: { file: LoadedDataset; aligned: LoadedDataset } | null
  /** per-sample feature shape, recorded with computed entries (default: flat, as computed) */
  shape?: number[]
  /** computes a dataset's features, opening the backbone on first use; null when cancelled */
  extract: (ds: LoadedDataset) => Promise<FeatureSet | null>
  /** the forward pass that computed features (null when none did), and how the event names it */
  computedBy: () => FrozenForward | null
  backboneLabel?: string
  featureLayer: string | null
  emit: (m: ChildMessage) => void
  /** when gathering started, for the event's `ms` */
  t0: number
}

/**
 * A transfer run's training and validation features: from the cache across jobs where an entry fits, computed
 * otherwise (and handed to the cache), with the one event saying which. A run served wholly from the cache never
 * opens its backbone. Null: cancelled while computing.
 */
export async function gatherFeatures(o: GatherFeatures): Promise<{ train: FeatureSet; val?: FeatureSet } | null> {
  const cachedTrain = usable(o.cache?.train, o.train)
  const cachedVal = o.validation ? usable(o.cache?.validation, o.validation.file) : null
  const train = cachedTrain ?? (await o.extract(o.train))
  const valComputed = o.validation && !cachedVal && train ? await o.extract(o.validation.aligned) : undefined
  if (!train || valComputed === null) return null
  const shape = o.shape ?? [train.dim]
  // cached labels index the validation file's own classes: take the aligned ones of the same rows
  const val =
    o.validation && cachedVal ? { ...cachedVal, labels: Int32Array.from(o.validation.aligned.y) } : valComputed
  if (o.cache && !cachedTrain) await o.cache.computed('training', { set: train, classes: o.train.classes, shape })
  if (o.cache && valComputed && o.validation)
    await o.cache.computed('validation', {
      set: { ...valComputed, labels: Int32Array.from(o.validation.file.y) },
      classes: o.validation.file.classes,
      shape,
    })
  const samples = train.rows + (val?.rows ?? 0)
  const fromCache = (cachedTrain ? train.rows : 0) + (cachedVal ? cachedVal.rows : 0)
  const computedBy = o.computedBy()
  const how = o.backboneLabel ?? computedBy?.path
  o.emit({
    type: 'event',
    level: 'info',
    message:
      fromCache === samples
        ? `features from cache for ${samples} samples`
        : fromCache > 0
          ? `features from cache for ${fromCache} samples, computed backbone features for ${samples - fromCache} (${how})`
          : `computed backbone features for ${samples} samples (${how})`,
    data: {
      samples,
      from_cache: fromCache,
      computed: samples - fromCache,
      ms: Math.round(performance.now() - o.t0),
      feature_layer: o.featureLayer,
      feature_dim: train.dim,
      ...(computedBy ? forwardEventData(computedBy) : {}),
    },
  })
  return { train, val }
}

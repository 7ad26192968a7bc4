// The training process's side of the feature cache across jobs: it reads the cached features its request
// points at (trusting only bytes that hash to the recorded sha256), and writes the features it computes where
// the worker will pick them up. The worker (src/modules/features) owns the entries, the storage and eviction.
import { type CachedFeatures, CorruptFeatureFile, readFeatureFile, writeFeatureFile } from './feature-file.js'
import type { ChildMessage, FeatureCacheSlot, TrainRequest } from './protocol.js'
import type { TransferFeatureCache } from './transfer.js'

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
      return await readFeatureFile(slot.cached.path, slot.cached.sha256)
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

// Loaded models of one inference process, least recently used evicted first once what they hold exceeds
// the byte budget: weights plus the activations of the largest batch each has run (the allocator keeps
// those pages after the tensors are freed, so they are the model's real cost). A model in use by a request is never evicted under it; the newest model always stays,
// even when it alone exceeds the budget (otherwise it could never answer).
import type { FrozenForward } from '../engine/graph/forward.js'
import type { ModelMetadata } from '../engine/protocol.js'
import type { LayersModel } from '../engine/tf.js'

/** A model ready to predict: the LayersModel, its metadata.json, and what it costs in memory. */
export interface CachedModel {
  key: string
  /** null for a TF.js graph model: it runs only through `forward` (a SavedModel session) */
  model: LayersModel | null
  meta: ModelMetadata
  /** the whole model's forward pass (graph or eager); its SavedModel session is closed with the model */
  forward?: FrozenForward
  /** weights (and the compiled session's constants) */
  bytes: number
  /** weights plus what a pass over `batch` inputs holds */
  bytesFor?(batch: number): number
}

interface Entry {
  value: Promise<CachedModel>
  bytes: number
  users: number
}

export class ModelCache {
  private readonly entries = new Map<string, Entry>()

  constructor(
    private readonly budgetBytes: number,
    private readonly load: (key: string, dir: string) => Promise<CachedModel>,
  ) {}

  /**
   * Runs `fn` with the model, loading it on a miss; concurrent misses on one key share one load. `batch`
   * inputs: the entry then counts the activations of the largest batch it has run.
   */
  async use<T>(key: string, dir: string, fn: (m: CachedModel) => Promise<T>, batch = 1): Promise<T> {
    let entry = this.entries.get(key)
    if (entry) {
      this.entries.delete(key)
      this.entries.set(key, entry) // most recently used last
    } else {
      entry = { value: this.load(key, dir), bytes: 0, users: 0 }
      this.entries.set(key, entry)
      const e = entry
      e.value.then(
        (m) => {
          e.bytes = Math.max(e.bytes, m.bytes)
          this.evict()
        },
        () => {
          if (this.entries.get(key) === e) this.entries.delete(key)
        },
      )
    }
    entry.users++
    try {
      const m = await entry.value
      const e = entry
      e.bytes = Math.max(e.bytes, m.bytesFor?.(batch) ?? m.bytes)
      return await fn(m)
    } finally {
      entry.users--
      this.evict()
    }
  }

  /** Keys of the models held (loaded or loading), least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()]
  }

  get totalBytes(): number {
    let sum = 0
    for (const e of this.entries.values()) sum += e.bytes
    return sum
  }

  /** Drops the models whose key starts with `prefix`, as soon as nobody uses them. */
  drop(prefix: string): void {
    for (const [key, e] of this.entries) {
      if (!key.startsWith(prefix)) continue
      this.entries.delete(key)
      void disposeWhenIdle(e)
    }
  }

  private evict(): void {
    let total = this.totalBytes
    for (const [key, e] of this.entries) {
      if (total <= this.budgetBytes || this.entries.size <= 1) break
      if (e.users > 0 || e.bytes === 0) continue
      this.entries.delete(key)
      total -= e.bytes
      void disposeWhenIdle(e)
    }
  }
}

async function disposeWhenIdle(e: Entry): Promise<void> {
  while (e.users > 0) await new Promise((r) => setTimeout(r, 50))
  const m = await e.value.catch(() => null)
  m?.forward?.dispose()
  m?.model?.dispose()
}

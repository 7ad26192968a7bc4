// The inference pool's memory rules for one child, kept out of pool.ts: the hard limit (killed past
// INFERENCE_MEMORY_BYTES; its requests answer 503 inference_out_of_memory and a fresh child replaces it) and
// recycling (a child still holding more than the recycle threshold once idle is replaced: tfjs-node and
// the allocator keep the pages of a large batch long after the tensors are gone).
import type { ChildProcess } from 'node:child_process'
import { AppError } from '../errors.js'
import { memoryKillMessage, type WatchedChild, watchChildMemory } from '../lib/memory-watchdog.js'

/** Memory settings of the pool's children; 0 turns a rule off. */
export interface ChildMemoryOptions {
  limitBytes: number
  recycleBytes: number
}

/** Least time between two recycle checks of one child (the watchdog samples every 100 ms too). */
export const RECYCLE_CHECK_MS = 100

/** One child's memory rules. */
export class ChildMemory {
  private readonly watched: WatchedChild | null
  private checkedAt = Number.NEGATIVE_INFINITY

  constructor(
    child: ChildProcess,
    private readonly opts: ChildMemoryOptions,
  ) {
    this.watched = opts.limitBytes > 0 ? watchChildMemory(child, { limitBytes: opts.limitBytes }) : null
  }

  /** The answer for requests the child was working on when it was killed for memory, else null. */
  killedError(): AppError | null {
    const k = this.watched?.killed
    if (!k) return null
    return new AppError(
      'inference_out_of_memory',
      `${memoryKillMessage('inference process', k, 'INFERENCE_MEMORY_BYTES')} A fresh one replaces it; retry with fewer inputs.`,
      {
        headers: { 'retry-after': '1' },
        details: [
          { field: 'rss_bytes', message: String(k.rssBytes) },
          { field: 'limit_bytes', message: String(k.limitBytes) },
        ],
      },
    )
  }

  /**
   * Whether an idle child holds more than it should keep between requests. Read from /proc at most every
   * RECYCLE_CHECK_MS: a busy pool goes idle after nearly every request, and the read was about 4% of the API's CPU.
   */
  shouldRecycle(): boolean {
    if (!this.opts.recycleBytes) return false
    const now = performance.now()
    if (now - this.checkedAt < RECYCLE_CHECK_MS) return false
    this.checkedAt = now
    return (this.watched?.rssBytes() ?? 0) > this.opts.recycleBytes
  }

  /** Resident set now, for logs. */
  rssBytes(): number {
    return this.watched?.rssBytes() ?? 0
  }
}

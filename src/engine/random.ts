/** mulberry32: a small seeded generator of floats in [0, 1); the engine never shuffles with Math.random. */
export function mulberry32(seed: number): () => number {
  const rng = new Rng(seed)
  return () => rng.next()
}

/**
 * mulberry32 with its 32-bit state exposed, so a checkpoint can store it and a resumed job draws exactly the
 * numbers (shuffles, dropout masks) the uninterrupted job would have drawn.
 */
export class Rng {
  private a: number
  constructor(seed: number) {
    this.a = seed | 0
  }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) | 0
    let t = Math.imul(this.a ^ (this.a >>> 15), 1 | this.a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  get state(): number {
    return this.a
  }
  set state(s: number) {
    this.a = s | 0
  }
}

/** Fisher-Yates shuffle of `0..n-1` driven by `rng`. */
export function shuffledIndices(n: number, rng: () => number): Int32Array {
  const a = new Int32Array(n)
  for (let i = 0; i < n; i++) a[i] = i
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const t = a[i]
    a[i] = a[j]
    a[j] = t
  }
  return a
}

// Deterministic dropout. tfjs's Dropout draws its masks from Math.random, or, given a `seed`, reuses one mask
// on every call. RefitDropout draws each mask from the job's generator instead, and only while a training step
// has switched dropout on (`withDropout`): the engine's training steps run the model with `training: false` so
// that BatchNorm keeps its moving statistics, so the `training` flag cannot be what turns dropout on.
// It serializes as a plain `Dropout` (same config), so saved models load in stock TensorFlow.js.
import type { Rng } from './random.js'
import type { Tensor, Tf } from './tf.js'

let activeRng: Rng | null = null

/** Runs `fn` with dropout masks drawn from `rng` (null: dropout off, as in inference). */
export function withDropout<T>(rng: Rng | null, fn: () => T): T {
  const previous = activeRng
  activeRng = rng
  try {
    return fn()
  } finally {
    activeRng = previous
  }
}

/** Registered class name; the saved class name stays `Dropout`. */
export const REFIT_DROPOUT = 'RefitDropout'

type DropoutCtor = new (args: { rate: number; name?: string; noiseShape?: number[]; seed?: number }) => any
const classes = new WeakMap<object, DropoutCtor>()

/** The RefitDropout class for this tfjs instance, registered for deserialization under `RefitDropout`. */
export function refitDropoutClass(tf: Tf): DropoutCtor {
  const known = classes.get(tf.serialization)
  if (known) return known
  const Base = tf.layers.dropout({ rate: 0.5 }).constructor as DropoutCtor
  class RefitDropout extends Base {
    static className = REFIT_DROPOUT
    getClassName(): string {
      return 'Dropout'
    }
    call(inputs: Tensor | Tensor[]): Tensor {
      const input = Array.isArray(inputs) ? inputs[0] : inputs
      const rng = activeRng
      const rate = (this as unknown as { rate: number }).rate
      if (!rng || !(rate > 0 && rate < 1)) return input
      const keep = 1 - rate
      const n = input.size
      const mask = new Float32Array(n)
      const scale = 1 / keep
      for (let i = 0; i < n; i++) mask[i] = rng.next() < keep ? scale : 0
      return tf.tidy(() => tf.mul(input, tf.tensor(mask, input.shape, 'float32')))
    }
  }
  tf.serialization.registerClass(RefitDropout as any)
  classes.set(tf.serialization, RefitDropout)
  return RefitDropout
}

/** A RefitDropout layer (saved as Dropout). */
export function dropoutLayer(tf: Tf, args: { rate: number; name: string }): ReturnType<Tf['layers']['dropout']> {
  const C = refitDropoutClass(tf)
  return new C(args)
}

/** Rewrites every `Dropout` in a Keras/tfjs model topology (in place) to RefitDropout, for training. */
export function useRefitDropout(tf: Tf, topology: unknown): void {
  refitDropoutClass(tf)
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n)
    } else if (node && typeof node === 'object') {
      const o = node as Record<string, unknown>
      if (o.class_name === 'Dropout') o.class_name = REFIT_DROPOUT
      for (const v of Object.values(o)) walk(v)
    }
  }
  walk(topology)
}

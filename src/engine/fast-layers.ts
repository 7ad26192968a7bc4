// Eager training and inference without two avoidable costs of tfjs-layers on the tensorflow backend
// (STACK.md "Graph execution", measured by bench/engine-eager.ts):
// - BatchNormalization in inference mode calls tf.batchNorm, which tfjs-node runs through TensorFlow's
//   FusedBatchNorm kernel, several times slower at MobileNet sizes than x * s + o with s = gamma * rsqrt(var +
//   eps) and o = beta - mean * s computed on the per-channel vectors. Gradients reach gamma and beta through
//   the small ops (moving statistics are not trained in inference mode).
// - ReLU(maxValue) runs relu then clipByValue; relu6 (maxValue 6) and relu + minimum are one op each.
// Training-mode BatchNorm (never used by our training steps) keeps the library's own code path.
// selectBackend (backend.ts) switches them on for the tensorflow backend, the only one measured; the
// MobileNetV2 fine-tuning step went from 636 to 535 ms (README "Eager layers before/after").
import type { Tensor, Tf } from './tf.js'

type Call = (this: any, inputs: Tensor | Tensor[], kwargs: Record<string, unknown>) => Tensor | Tensor[]

const originals = new WeakMap<object, { bn: Call; relu: Call }>()

/**
 * Switches this tfjs instance's BatchNormalization and ReLU layers to the faster ops (`on`, the default) or
 * back to the library's own (`false`, for bench/engine-eager.ts's before/after); idempotent.
 */
export function useFastLayers(tf: Tf, on = true): void {
  const bnProto = Object.getPrototypeOf(tf.layers.batchNormalization({}))
  const reluProto = Object.getPrototypeOf(tf.layers.reLU({}))
  let saved = originals.get(tf.serialization)
  if (!saved) {
    saved = { bn: bnProto.call, relu: reluProto.call }
    originals.set(tf.serialization, saved)
  }
  if (!on) {
    bnProto.call = saved.bn
    reluProto.call = saved.relu
    return
  }
  const bnCall = saved.bn
  bnProto.call = function (this: any, inputs: Tensor | Tensor[], kwargs: Record<string, unknown>) {
    const x = Array.isArray(inputs) ? inputs[0] : inputs
    const axis = this.axis >= 0 ? this.axis : this.axis + x.rank
    if (kwargs?.training || axis !== x.rank - 1) return bnCall.call(this, inputs, kwargs)
    return tf.tidy(() => {
      let scale = tf.rsqrt(tf.add(this.movingVariance.read(), this.epsilon))
      if (this.scale && this.gamma) scale = tf.mul(scale, this.gamma.read())
      let offset = tf.neg(tf.mul(this.movingMean.read(), scale))
      if (this.center && this.beta) offset = tf.add(offset, this.beta.read())
      return tf.add(tf.mul(x, scale), offset)
    })
  }
  reluProto.call = function (this: any, inputs: Tensor | Tensor[]) {
    const x = Array.isArray(inputs) ? inputs[0] : inputs
    if (this.maxValue == null) return tf.relu(x)
    if (this.maxValue === 6) return tf.relu6(x)
    return tf.tidy(() => tf.minimum(tf.relu(x), this.maxValue))
  }
}

// Eager training and inference without two avoidable costs of tfjs-layers on the tensorflow backend
// (STACK.md "Graph execution", measured by bench/engine-eager.ts):
// - BatchNormalization in inference mode calls tf.batchNorm, which tfjs-node runs through TensorFlow's
//   FusedBatchNorm kernel, several times slower at MobileNet sizes than x * s + o with s = gamma * rsqrt(var +
//   eps) and o = beta - mean * s computed on the per-channel vectors. Gradients reach gamma and beta through
//   the small ops (moving statistics are not trained in inference mode).
// - ReLU(maxValue) runs relu then clipByValue; relu6 (maxValue 6) and relu + minimum are one op each.
// - The gradients of Relu and Relu6: tfjs computes dy * step(x), and tfjs-node's Step kernel is seven
//   TensorFlow ops (isNaN, greater, ones, fill, two selects, a cast) over the whole activation; TensorFlow's
//   own ReluGrad / Relu6Grad kernels do it in one pass. In a cnn-small training step (batch 128) the relu
//   gradients took about a quarter of the step (bench/engine-eager.ts "relu gradients" row).
// Training-mode BatchNorm (never used by our training steps) keeps the library's own code path.
// selectBackend (backend.ts) switches them on for the tensorflow backend, the only one measured; the
// MobileNetV2 fine-tuning step went from 636 to 535 ms (README "Eager layers before/after").
import type { Tensor, Tf } from './tf.js'

type GradConfig = ReturnType<Tf['getGradient']>

/** Kernels of ours on the tensorflow backend: TensorFlow ops tfjs-node has no kernel for. */
const GRAD_KERNELS = { Relu: 'RefitReluGrad', Relu6: 'RefitRelu6Grad' } as const
const TF_OPS = { RefitReluGrad: 'ReluGrad', RefitRelu6Grad: 'Relu6Grad' } as const

const originalGrads = new WeakMap<object, Map<string, GradConfig>>()

/**
 * Relu's and Relu6's gradients through TensorFlow's ReluGrad / Relu6Grad (`on`), or the library's own
 * (`false`). Both give dy where 0 < x (< 6 for Relu6) and 0 elsewhere; they differ only at x = 6 exactly
 * (tfjs lets the gradient through there, TensorFlow does not) and for NaN inputs (a diverged step, which the
 * training loop stops on anyway).
 */
function useFastGradients(tf: Tf, on: boolean): void {
  let saved = originalGrads.get(tf.serialization)
  if (!saved) {
    saved = new Map(Object.keys(GRAD_KERNELS).map((k) => [k, tf.getGradient(k)]))
    originalGrads.set(tf.serialization, saved)
    for (const [kernelName, op] of Object.entries(TF_OPS))
      tf.registerKernel({
        kernelName,
        backendName: 'tensorflow',
        kernelFunc: ({ inputs, backend }) => {
          const b = backend as any
          const dtype = { name: 'T', type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT }
          return b.executeSingleOutput(op, [dtype], [inputs.dy, inputs.x])
        },
      })
  }
  // The gradient registry is shared by every backend of this tfjs instance (a process may run cpu or wasm
  // beside tensorflow, e.g. the backend self-tests): ours applies only while tensorflow is the active backend.
  for (const [kernelName, grad] of Object.entries(GRAD_KERNELS)) {
    const library = saved.get(kernelName)!
    tf.registerGradient(
      on
        ? {
            ...library,
            gradFunc: (dy, inputs, attrs) =>
              tf.getBackend() === 'tensorflow'
                ? { x: () => tf.engine().runKernel(grad, { dy: dy as Tensor, x: inputs[0] }) as Tensor }
                : library.gradFunc(dy, inputs, attrs),
          }
        : library,
    )
  }
}

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
  useFastGradients(tf, on)
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

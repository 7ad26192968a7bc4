// Two kernels that @tensorflow/tfjs-backend-wasm 4.22.0 gets wrong or lacks, registered for 'wasm' only.
// Without them a CNN cannot be trained on wasm: Conv2DBackpropFilter is missing, and MaxPoolGrad gives a
// zero gradient to every window whose maximum is negative.
import type { Tf } from './tf.js'

type KernelFunc = (params: { inputs: Record<string, any>; backend: any; attrs?: Record<string, any> }) => any

function pads1d(inSize: number, outSize: number, stride: number, filter: number, pad: unknown): [number, number] {
  if (pad === 'valid') return [0, 0]
  if (pad === 'same') {
    const total = Math.max((outSize - 1) * stride + filter - inSize, 0)
    const before = Math.floor(total / 2)
    return [before, total - before]
  }
  if (typeof pad === 'number') return [pad, pad]
  throw new Error(`Conv2DBackpropFilter(wasm): unsupported padding ${JSON.stringify(pad)}`)
}

/**
 * Conv2DBackpropFilter composed from kernels wasm has (PadV2, Transpose, dilated Conv2D, Slice):
 * dW[i,j,ci,co] = sum_{b,p,q} xpad[b, p*s+i, q*s+j, ci] * dy[b,p,q,co], i.e. a Conv2D of
 * transpose(xpad)[ci,H,W,B] with transpose(dy)[oh,ow,B,co] at dilation s. Returns false if already present.
 */
export function registerWasmConv2DBackpropFilter(tf: Tf): boolean {
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm')) return false
  const k = (name: string): KernelFunc => {
    const config = tf.getKernel(name, 'wasm')
    if (!config) throw new Error(`wasm kernel missing: ${name}`)
    return config.kernelFunc as unknown as KernelFunc
  }
  const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => {
    const { x, dy } = inputs
    const { strides, pad, dataFormat, filterShape } = attrs as Record<string, any>
    if (dataFormat && dataFormat !== 'NHWC') throw new Error('Conv2DBackpropFilter(wasm): only NHWC')
    if (Array.isArray(pad)) throw new Error('Conv2DBackpropFilter(wasm): explicit padding not supported')
    const [sh, sw] = (Array.isArray(strides) ? strides : [strides, strides]) as [number, number]
    const [kh, kw] = filterShape as number[]
    const [, h, w, ci] = x.shape as number[]
    const [, oh, ow] = dy.shape as number[]
    const temps: any[] = []
    const keep = <T>(t: T): T => {
      temps.push(t)
      return t
    }
    const [pt, pb] = pads1d(h, oh, sh, kh, pad)
    const [pl, pr] = pads1d(w, ow, sw, kw, pad)
    let xp = x
    if (pt || pb || pl || pr) {
      xp = keep(
        k('PadV2')({
          inputs: { x },
          backend,
          attrs: {
            paddings: [
              [0, 0],
              [pt, pb],
              [pl, pr],
              [0, 0],
            ],
            constantValue: 0,
          },
        }),
      )
    }
    const a = keep(k('Transpose')({ inputs: { x: xp }, backend, attrs: { perm: [3, 1, 2, 0] } }))
    const f = keep(k('Transpose')({ inputs: { x: dy }, backend, attrs: { perm: [1, 2, 0, 3] } }))
    let c = keep(
      k('Conv2D')({
        inputs: { x: a, filter: f },
        backend,
        attrs: { strides: [1, 1], pad: 'valid', dataFormat: 'NHWC', dilations: [sh, sw], dimRoundingMode: undefined },
      }),
    )
    if (c.shape[1] !== kh || c.shape[2] !== kw) {
      c = keep(
        k('Slice')({ inputs: { x: c }, backend, attrs: { begin: [0, 0, 0, 0], size: [ci, kh, kw, c.shape[3]] } }),
      )
    }
    const out = k('Transpose')({ inputs: { x: c }, backend, attrs: { perm: [1, 2, 0, 3] } })
    for (const t of temps) backend.disposeData(t.dataId)
    return out
  }
  tf.registerKernel({ kernelName: 'Conv2DBackpropFilter', backendName: 'wasm', kernelFunc: kernelFunc as any })
  return true
}

/**
 * Replaces wasm's MaxPoolGrad with a JS loop over the wasm heap. Ties go to the first maximum,
 * as on the cpu and tensorflow backends.
 */
export function registerWasmMaxPoolGradFix(tf: Tf): void {
  if (tf.getKernel('MaxPoolGrad', 'wasm')) tf.unregisterKernel('MaxPoolGrad', 'wasm')
  const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => {
    const { dy, input } = inputs
    const { filterSize, strides, pad, dimRoundingMode } = attrs as Record<string, any>
    const info = tf.backend_util.computePool2DInfo(input.shape, filterSize, strides, 1, pad, dimRoundingMode)
    const dx = backend.makeOutput(input.shape, 'float32')
    const X = backend.typedArrayFromHeap(input) as Float32Array
    const DY = backend.typedArrayFromHeap(dy) as Float32Array
    const DX = backend.typedArrayFromHeap(dx) as Float32Array
    DX.fill(0)
    const { batchSize: n, inHeight: H, inWidth: W, inChannels: C, outHeight: OH, outWidth: OW } = info
    const { strideHeight: sh, strideWidth: sw, effectiveFilterHeight: fh, effectiveFilterWidth: fw } = info
    const pt = info.padInfo.top
    const pl = info.padInfo.left
    for (let b = 0; b < n; b++) {
      for (let oh = 0; oh < OH; oh++) {
        const h0 = oh * sh - pt
        const hs = Math.max(0, h0)
        const he = Math.min(H, h0 + fh)
        for (let ow = 0; ow < OW; ow++) {
          const w0 = ow * sw - pl
          const ws = Math.max(0, w0)
          const we = Math.min(W, w0 + fw)
          for (let c = 0; c < C; c++) {
            let best = Number.NEGATIVE_INFINITY
            let bi = -1
            for (let h = hs; h < he; h++) {
              for (let w = ws; w < we; w++) {
                const i = ((b * H + h) * W + w) * C + c
                const v = X[i]
                if (v > best || bi < 0) {
                  best = v
                  bi = i
                }
              }
            }
            if (bi >= 0) DX[bi] += DY[((b * OH + oh) * OW + ow) * C + c]
          }
        }
      }
    }
    return dx
  }
  tf.registerKernel({ kernelName: 'MaxPoolGrad', backendName: 'wasm', kernelFunc: kernelFunc as any })
}

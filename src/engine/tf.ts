import type * as tfjs from '@tensorflow/tfjs'

/** The TensorFlow.js namespace the engine works with (tfjs-node's is a superset of @tensorflow/tfjs's). */
export type Tf = typeof tfjs
export type {
  LayersModel,
  Optimizer,
  Scalar,
  SymbolicTensor,
  Tensor,
  Tensor2D,
  Variable,
} from '@tensorflow/tfjs'

/** A named tensor, as optimizers' getWeights / setWeights exchange them. */
export interface NamedTensor {
  name: string
  tensor: tfjs.Tensor
}

// A TensorFlow GraphDef written node by node with the protobuf messages tfjs-node ships
// (`@tensorflow/tfjs-node/dist/proto/api_pb.js`), and the SavedModel (tag `serve`, signature
// `serving_default`, input `x`, output `y`) that wraps it. Weights are `Const` nodes: the graph is frozen,
// which is what tfjs-node's SavedModel session runs (resource variables fail there, STACK.md).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

type Pb = any
let pbModule: Pb | null = null

/** The protobuf classes, loaded on first use (only the tensorflow backend has them). */
function pb(): Pb {
  pbModule ??= require('@tensorflow/tfjs-node/dist/proto/api_pb.js')
  return pbModule
}

/** The protobuf classes, for code that builds attribute values of its own (graph-model.ts). */
export function protobuf(): Pb {
  return pb()
}

function shapeProto(dims: readonly number[]): Pb {
  const P = pb()
  const s = new P.TensorShape()
  s.setDimList(
    dims.map((d) => {
      const x = new P.TensorShape.Dim()
      x.setSize(d)
      return x
    }),
  )
  return s
}

/** Attribute values of a node, by the kinds our ops use. */
export const attr = {
  float(): Pb {
    const a = new (pb().AttrValue)()
    a.setType(pb().DataType.DT_FLOAT)
    return a
  },
  bool(): Pb {
    const a = new (pb().AttrValue)()
    a.setType(pb().DataType.DT_BOOL)
    return a
  },
  int32(): Pb {
    const a = new (pb().AttrValue)()
    a.setType(pb().DataType.DT_INT32)
    return a
  },
  ints(xs: number[]): Pb {
    const P = pb()
    const l = new P.AttrValue.ListValue()
    l.setIList(xs)
    const a = new P.AttrValue()
    a.setList(l)
    return a
  },
  int(x: number): Pb {
    const a = new (pb().AttrValue)()
    a.setI(x)
    return a
  },
  f(x: number): Pb {
    const a = new (pb().AttrValue)()
    a.setF(x)
    return a
  },
  b(x: boolean): Pb {
    const a = new (pb().AttrValue)()
    a.setB(x)
    return a
  },
  s(x: string): Pb {
    const a = new (pb().AttrValue)()
    a.setS(Buffer.from(x))
    return a
  },
  shape(dims: readonly number[]): Pb {
    const a = new (pb().AttrValue)()
    a.setShape(shapeProto(dims))
    return a
  },
}

/** Builds a GraphDef; node names are unique and valid TensorFlow names. */
export class GraphBuilder {
  private readonly graph: Pb = new (pb().GraphDef)()
  private readonly names = new Set<string>()
  /** bytes of constant tensors added (weights), to size the session */
  constBytes = 0

  /** A fresh node name derived from `hint`. */
  name(hint: string): string {
    const base = hint.replace(/[^A-Za-z0-9_.\-/]/g, '_').replace(/^[^A-Za-z0-9.]+/, '') || 'n'
    let candidate = base
    for (let i = 1; this.names.has(candidate); i++) candidate = `${base}_${i}`
    this.names.add(candidate)
    return candidate
  }

  /** Adds a node; returns its name (= its first output). */
  node(hint: string, op: string, inputs: string[], attrs: Record<string, Pb> = {}): string {
    const P = pb()
    const n = new P.NodeDef()
    const name = this.name(hint)
    n.setName(name)
    n.setOp(op)
    n.setInputList(inputs)
    for (const [k, v] of Object.entries(attrs)) n.getAttrMap().set(k, v)
    this.graph.addNode(n)
    return name
  }

  /** A float32 constant. */
  constFloat(hint: string, values: Float32Array, dims: readonly number[]): string {
    const P = pb()
    const t = new P.Tensor()
    t.setDtype(P.DataType.DT_FLOAT)
    t.setTensorShape(shapeProto(dims))
    t.setTensorContent(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
    const a = new P.AttrValue()
    a.setTensor(t)
    this.constBytes += values.byteLength
    return this.node(hint, 'Const', [], { dtype: attr.float(), value: a })
  }

  /** An int32 constant (axes, shapes, paddings). */
  constInt(hint: string, values: number[], dims: readonly number[]): string {
    const P = pb()
    const t = new P.Tensor()
    t.setDtype(P.DataType.DT_INT32)
    t.setTensorShape(shapeProto(dims))
    t.setIntValList(values)
    const a = new P.AttrValue()
    a.setTensor(t)
    return this.node(hint, 'Const', [], { dtype: attr.int32(), value: a })
  }

  placeholder(hint: string, dims: readonly number[]): string {
    return this.node(hint, 'Placeholder', [], { dtype: attr.float(), shape: attr.shape(dims) })
  }

  /**
   * The SavedModel bytes (saved_model.pb) of this graph with one signature `serving_default`: the placeholder
   * under key `input.key` (default `x`) -> the output under `output.key` (default `y`). tfjs-node reads the
   * TensorInfos' shapes, so both carry one.
   */
  savedModel(
    input: { name: string; dims: number[]; key?: string },
    output: { name: string; dims: number[]; key?: string },
  ): Uint8Array {
    return this.savedModelOf(
      [{ key: input.key ?? 'x', name: input.name, dims: input.dims }],
      [{ key: output.key ?? 'y', name: output.name, dims: output.dims }],
    )
  }

  /** The SavedModel bytes with a `serving_default` signature of several float inputs and outputs. */
  savedModelOf(inputs: SignatureTensor[], outputs: SignatureTensor[]): Uint8Array {
    const P = pb()
    const info = (name: string, dims: number[]) => {
      const t = new P.TensorInfo()
      t.setName(`${name}:0`)
      t.setDtype(P.DataType.DT_FLOAT)
      t.setTensorShape(shapeProto(dims))
      return t
    }
    const sig = new P.SignatureDef()
    sig.setMethodName('tensorflow/serving/predict')
    for (const i of inputs) sig.getInputsMap().set(i.key, info(i.name, i.dims))
    for (const o of outputs) sig.getOutputsMap().set(o.key, info(o.name, o.dims))
    const meta = new P.MetaGraphDef()
    const metaInfo = new P.MetaGraphDef.MetaInfoDef()
    metaInfo.setTagsList(['serve'])
    meta.setMetaInfoDef(metaInfo)
    meta.setGraphDef(this.graph)
    meta.getSignatureDefMap().set('serving_default', sig)
    const sm = new P.SavedModel()
    sm.setSavedModelSchemaVersion(1)
    sm.setMetaGraphsList([meta])
    return sm.serializeBinary()
  }
}

/** One entry of a signature: its key, the node whose first output it is, and its shape (-1: any). */
export interface SignatureTensor {
  key: string
  name: string
  dims: number[]
}

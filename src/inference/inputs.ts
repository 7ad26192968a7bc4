// Turning a predictions request (JSON or multipart) into raw inputs for an inference process, checked
// against the model's input shape: every fault is reported with the index of the input at fault and what
// was expected. Decoding images is left to the inference process (off the API's event loop).
import type { MultipartFile, MultipartValue } from '@fastify/multipart'
import { imageKind } from '../datasets/image.js'
import { AppError, type ErrorDetail, MAX_ERROR_DETAILS } from '../errors.js'
import type { RawInputs } from './protocol.js'

/** Inputs accepted in one call. */
export const MAX_INPUTS = 256
/** Largest accepted image, compressed, per input. */
export const MAX_IMAGE_BYTES = 20 * 1024 * 1024
/** Classes returned per input when `top_k` is not given (fewer when the model has fewer). */
export const DEFAULT_TOP_K = 5

/** What a model needs from its inputs. */
export interface InputSpec {
  inputShape: number[]
  classes: number
}

/** A parsed request: the raw inputs and how many classes to return per input. */
export interface ParsedInputs {
  inputs: RawInputs
  topK: number
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

const describe = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? `an array of ${v.length}` : typeof v === 'string' ? 'a string' : typeof v

function invalid(details: ErrorDetail[]): AppError {
  const first = details[0]
  const more = details.length > 1 ? ` (and ${details.length - 1} more)` : ''
  return new AppError('invalid_input', `${first.field}: ${first.message}${more}`, {
    param: first.field ?? 'inputs',
    details,
  })
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$|^[A-Za-z0-9_-]*={0,2}$/

/** Decodes a base64 (or base64url, or data: URL) image and checks it is a PNG or JPEG. */
function decodeImage(value: unknown, field: string, problems: ErrorDetail[]): Uint8Array | null {
  if (typeof value !== 'string' || value.length === 0) {
    problems.push({ field, message: `expected a base64 PNG or JPEG string, got ${describe(value)}` })
    return null
  }
  const text = value.replace(/^data:image\/[a-z]+;base64,/i, '').replace(/\s+/g, '')
  const encoding = text.includes('-') || text.includes('_') ? 'base64url' : 'base64'
  const bytes = Buffer.from(text, encoding)
  // Text that encodes its bytes back to itself is in the alphabet: a native round trip instead of the
  // regular expression, which took 11 ms of the API's event loop on a 32-photo (1.5 MB) request. Other
  // spellings (no padding in base64, padding in base64url) still go through the expression.
  if (bytes.toString(encoding) !== text && !BASE64.test(text)) {
    problems.push({ field, message: 'expected base64 text, got characters outside the base64 alphabet' })
    return null
  }
  return checkImageBytes(bytes, field, problems)
}

function checkImageBytes(bytes: Buffer, field: string, problems: ErrorDetail[]): Uint8Array | null {
  if (bytes.length > MAX_IMAGE_BYTES) {
    problems.push({ field, message: `expected at most ${MAX_IMAGE_BYTES} bytes, got ${bytes.length}` })
    return null
  }
  if (!imageKind(bytes)) {
    problems.push({ field, message: `expected a PNG or JPEG image, got ${bytes.length} bytes of something else` })
    return null
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

function parseTopK(raw: unknown, classes: number, problems: ErrorDetail[]): number {
  if (raw === undefined || raw === '') return Math.min(DEFAULT_TOP_K, classes)
  const n = typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : raw
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > classes) {
    problems.push({ field: 'top_k', message: `expected an integer from 1 to ${classes}, got ${JSON.stringify(raw)}` })
    return 1
  }
  return n
}

function countCheck(n: number, problems: ErrorDetail[]): void {
  if (n < 1) problems.push({ field: 'inputs', message: 'expected 1 to 256 inputs, got none' })
  if (n > MAX_INPUTS) problems.push({ field: 'inputs', message: `expected at most ${MAX_INPUTS} inputs, got ${n}` })
}

/** `{ inputs: [{image} | {features}], top_k? }`, checked against the model. */
export function parseJsonInputs(body: unknown, spec: InputSpec): ParsedInputs {
  const problems: ErrorDetail[] = []
  if (!isRecord(body)) throw invalid([{ field: 'body', message: `expected a JSON object, got ${describe(body)}` }])
  for (const k of Object.keys(body))
    if (k !== 'inputs' && k !== 'top_k') problems.push({ field: k, message: 'unknown field; expected inputs, top_k' })
  const topK = parseTopK(body.top_k, spec.classes, problems)
  const items = body.inputs
  if (!Array.isArray(items)) {
    problems.push({ field: 'inputs', message: `expected an array of inputs, got ${describe(items)}` })
    throw invalid(problems)
  }
  countCheck(items.length, problems)
  if (problems.length) throw invalid(problems)

  const imageModel = spec.inputShape.length === 3
  const features = spec.inputShape.reduce((a, b) => a * b, 1)
  const wanted = imageModel
    ? `{"image": "<base64 PNG or JPEG>"} (the model takes ${spec.inputShape.join('x')} images)`
    : `{"features": [${features} numbers]}`
  const images: Uint8Array[] = []
  const rows = new Float32Array(imageModel ? 0 : items.length * features)
  for (const [i, item] of items.entries()) {
    if (problems.length >= MAX_ERROR_DETAILS) break
    const at = `inputs[${i}]`
    const keys = isRecord(item) ? Object.keys(item) : []
    const key = imageModel ? 'image' : 'features'
    if (!isRecord(item) || keys.length !== 1 || keys[0] !== key) {
      const got = isRecord(item) ? `an object with ${keys.length ? keys.join(', ') : 'no fields'}` : describe(item)
      problems.push({ field: at, message: `expected ${wanted}, got ${got}` })
      continue
    }
    if (imageModel) {
      const bytes = decodeImage(item.image, `${at}.image`, problems)
      if (bytes) images.push(bytes)
      continue
    }
    const v = item.features
    if (!Array.isArray(v)) {
      problems.push({ field: `${at}.features`, message: `expected ${features} numbers, got ${describe(v)}` })
    } else if (v.length !== features) {
      problems.push({ field: `${at}.features`, message: `expected ${features} numbers, got ${v.length}` })
    } else {
      const bad = v.findIndex((x) => typeof x !== 'number' || !Number.isFinite(x))
      if (bad >= 0)
        problems.push({
          field: `${at}.features[${bad}]`,
          message: `expected a finite number, got ${JSON.stringify(v[bad])}`,
        })
      else rows.set(v as number[], i * features)
    }
  }
  if (problems.length) throw invalid(problems)
  return {
    inputs: imageModel ? { kind: 'image', images } : { kind: 'tabular', features: rows, rows: items.length },
    topK,
  }
}

/** Multipart: one or more `image` file parts, optionally a `top_k` field. Only image models take it. */
export async function parseMultipartInputs(
  parts: AsyncIterableIterator<MultipartFile | MultipartValue>,
  spec: InputSpec,
): Promise<ParsedInputs> {
  const problems: ErrorDetail[] = []
  const images: Uint8Array[] = []
  let topKRaw: unknown
  let n = 0
  for await (const part of parts) {
    if (part.type === 'file') {
      if (part.fieldname !== 'image') {
        part.file.resume()
        problems.push({ field: part.fieldname, message: 'unexpected file part; expected parts named `image`' })
        continue
      }
      const at = `inputs[${n++}].image`
      const buf = await part.toBuffer().catch((e: Error) => {
        problems.push({ field: at, message: `expected at most ${MAX_IMAGE_BYTES} bytes (${e.message})` })
        return null
      })
      if (spec.inputShape.length !== 3) continue
      const bytes = buf && checkImageBytes(buf, at, problems)
      if (bytes) images.push(bytes)
    } else if (part.fieldname === 'top_k') {
      topKRaw = String(part.value)
    } else {
      problems.push({ field: part.fieldname, message: 'unknown field; expected `image` file parts and `top_k`' })
    }
  }
  if (spec.inputShape.length !== 3)
    problems.unshift({
      field: 'inputs',
      message: `expected JSON {"inputs": [{"features": [...]}]}: the model takes rows of ${spec.inputShape.reduce((a, b) => a * b, 1)} numbers, not images`,
    })
  countCheck(n, problems)
  const topK = parseTopK(topKRaw, spec.classes, problems)
  if (problems.length) throw invalid(problems)
  return { inputs: { kind: 'image', images }, topK }
}

/** The `top_k` most probable classes of each row, most probable first. */
export function topClasses(probs: Float32Array, rows: number, classes: string[], topK: number) {
  const k = classes.length
  const data = []
  for (let r = 0; r < rows; r++) {
    const order = Array.from({ length: k }, (_, j) => j).sort((a, b) => probs[r * k + b] - probs[r * k + a])
    data.push({
      index: r,
      predictions: order.slice(0, topK).map((j) => ({ class: classes[j], probability: probs[r * k + j] })),
    })
  }
  return data
}

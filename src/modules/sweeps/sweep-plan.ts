// A sweep's plan: which fields a search space may name, and the values of every trial, fixed at creation
// from the spec and its seed (the same spec and seed give the same values in the same order).
import type { TSchema } from '@fastify/type-provider-typebox'
import { Value } from 'typebox/value'
import { mulberry32 } from '../../engine/random.js'
import { AppError } from '../../errors.js'
import { CreateJobBody, MethodInput } from '../../schemas/jobs.js'
import type { CreateSweepBody, Dimension } from '../../schemas/sweeps.js'

export type TrialValues = Record<string, unknown>

const isRange = (d: Dimension): d is Extract<Dimension, { min: number }> => 'min' in d
const param = (path: string) => `search_space.${path}`

/** The schema of the field `path` names inside `schema` (through unions such as `"auto" | number`), or null. */
function fieldSchema(schema: TSchema, path: string[]): TSchema | null {
  const s = schema as { anyOf?: TSchema[]; type?: string; properties?: Record<string, TSchema> }
  if (!path.length) return schema
  if (s.anyOf) {
    for (const member of s.anyOf) {
      const found = fieldSchema(member, path)
      if (found) return found
    }
    return null
  }
  const next = s.type === 'object' ? s.properties?.[path[0]!] : undefined
  return next ? fieldSchema(next, path.slice(1)) : null
}

const isObjectOnly = (schema: TSchema): boolean => {
  const s = schema as { anyOf?: TSchema[]; type?: string }
  return s.anyOf
    ? s.anyOf.every((m) => isObjectOnly(m) || (m as { type?: string }).type === 'null')
    : s.type === 'object'
}

/** Refuses a search space a sweep cannot plan: unknown path, empty or inverted range, grid that does not fit. */
export function checkSearchSpace(body: CreateSweepBody, maxSweepTrials: number): void {
  const methodSchema = (MethodInput.properties as Record<string, TSchema>)[body.method.type]
  if (!methodSchema || body.method.type === 'type')
    throw new AppError(
      'unsupported_method',
      `method.type must be transfer, supervised or distillation, got "${body.method.type}".`,
      {
        param: 'method.type',
      },
    )
  for (const [path, dim] of Object.entries(body.search_space)) {
    const field = fieldSchema(methodSchema, path.split('.'))
    if (!field || isObjectOnly(field))
      throw new AppError(
        'invalid_search_space',
        `search_space path '${path}' names no tunable field of method.${body.method.type}${field ? ' (it names an object: name a field inside it)' : ''}; paths are relative to method.${body.method.type}, e.g. hyperparameters.learning_rate.`,
        { param: param(path) },
      )
    if (isRange(dim)) {
      if (body.strategy === 'grid')
        throw new AppError(
          'invalid_search_space',
          `search_space path '${path}' is a range; a grid sweep needs {values: [...]} on every path.`,
          { param: param(path) },
        )
      const lo = dim.type === 'int' ? Math.ceil(dim.min) : dim.min
      const hi = dim.type === 'int' ? Math.floor(dim.max) : dim.max
      if (!(lo < hi) && !(dim.type === 'int' && lo === hi))
        throw new AppError(
          'invalid_search_space',
          `search_space path '${path}' has an empty or inverted range (min ${dim.min}, max ${dim.max}): min must be below max.`,
          { param: param(path) },
        )
      if (dim.scale === 'log' && dim.min <= 0)
        throw new AppError('invalid_search_space', `search_space path '${path}' has a log scale, so min must be > 0.`, {
          param: param(path),
        })
    } else if (!dim.values.length)
      throw new AppError('invalid_search_space', `search_space path '${path}' has no values.`, { param: param(path) })
  }
  if (body.max_trials > maxSweepTrials)
    throw new AppError(
      'sweep_too_large',
      `max_trials ${body.max_trials} is above MAX_SWEEP_TRIALS (${maxSweepTrials}) on this server.`,
      { param: 'max_trials' },
    )
  if (body.strategy === 'grid') {
    const size = Object.values(body.search_space).reduce((n, d) => n * (d as { values: unknown[] }).values.length, 1)
    if (size > body.max_trials)
      throw new AppError(
        'sweep_too_large',
        `The grid has ${size} combinations, more than max_trials (${body.max_trials}): raise max_trials or give fewer values.`,
        { param: 'max_trials' },
      )
  }
}

/**
 * The values of every trial, in order: the grid's combinations (first path outermost), or max_trials draws,
 * the first of them replaced by `baseline` when given (the draws that follow are the same either way).
 */
export function planTrials(body: CreateSweepBody, seed: number, baseline: TrialValues | null = null): TrialValues[] {
  const dims = Object.entries(body.search_space)
  if (body.strategy === 'grid') {
    let combos: TrialValues[] = [{}]
    for (const [path, dim] of dims)
      combos = combos.flatMap((c) => (dim as { values: unknown[] }).values.map((v) => ({ ...c, [path]: v })))
    return combos
  }
  const rng = mulberry32(seed)
  const trials: TrialValues[] = baseline ? [baseline] : []
  while (trials.length < body.max_trials) {
    const t: TrialValues = {}
    for (const [path, dim] of dims) t[path] = draw(dim, rng())
    trials.push(t)
  }
  return trials
}

/** Whether `v` is a value the dimension could give (one of its values, or inside its range and of its type). */
function inside(dim: Dimension, v: unknown): boolean {
  if (!isRange(dim)) return dim.values.some((x) => x === v)
  if (typeof v !== 'number' || !Number.isFinite(v)) return false
  if (dim.type === 'int' && !Number.isInteger(v)) return false
  return v >= dim.min && v <= dim.max
}

/** A lone job's settings as the job routes resolve them (resolveJob's `method` and `hyperparameters`). */
export interface LoneJobSettings {
  method: Record<string, unknown>
  hyperparameters: Record<string, unknown>
}

/**
 * The baseline trial's values: each search-space path set to what a lone job with the sweep's request would
 * use (`hyperparameters.*` as resolved from the training file, the rest from the method's own defaults), or
 * why there is none (a default outside the search space, or not known while the file is being validated).
 */
export function baselineValues(
  body: CreateSweepBody,
  lone: LoneJobSettings,
): { values: TrialValues } | { reason: string } {
  const values: TrialValues = {}
  for (const [path, dim] of Object.entries(body.search_space)) {
    const [root, ...rest] = path.split('.')
    const hp = root === 'hyperparameters'
    let node: unknown = hp ? lone.hyperparameters : lone.method[body.method.type]
    for (const k of hp ? rest : [root!, ...rest])
      node = node && typeof node === 'object' ? (node as Record<string, unknown>)[k] : undefined
    if (node === undefined || node === 'auto')
      return {
        reason:
          node === 'auto'
            ? `the default of ${path} resolves from the training file, which is still being validated`
            : `${path} has no default here`,
      }
    if (!inside(dim, node))
      return { reason: `the default of ${path} (${JSON.stringify(node)}) lies outside the search space` }
    values[path] = node
  }
  return { values }
}

function draw(dim: Dimension, u: number): unknown {
  if (!isRange(dim)) return dim.values[Math.min(dim.values.length - 1, Math.floor(u * dim.values.length))]
  const log = dim.scale === 'log'
  if (dim.type === 'int') {
    const lo = Math.ceil(dim.min)
    const hi = Math.floor(dim.max)
    if (!log) return Math.min(hi, lo + Math.floor(u * (hi - lo + 1)))
    return Math.min(hi, Math.max(lo, Math.round(Math.exp(Math.log(lo) + u * (Math.log(hi) - Math.log(lo))))))
  }
  const v = log
    ? Math.exp(Math.log(dim.min) + u * (Math.log(dim.max) - Math.log(dim.min)))
    : dim.min + u * (dim.max - dim.min)
  // six significant digits: readable in the API, and the same on every platform
  return Math.min(dim.max, Math.max(dim.min, Number(v.toPrecision(6))))
}

/** The job a trial is: the sweep's request with each path of `method.<type>` set to the trial's value. */
export function trialBody(spec: CreateSweepBody, values: TrialValues, seed: number): CreateJobBody {
  const config = structuredClone(
    ((spec.method as Record<string, unknown>)[spec.method.type] ?? {}) as Record<string, unknown>,
  )
  for (const [path, value] of Object.entries(values)) {
    const keys = path.split('.')
    let node = config
    for (const k of keys.slice(0, -1)) {
      if (!node[k] || typeof node[k] !== 'object') node[k] = {}
      node = node[k] as Record<string, unknown>
    }
    node[keys.at(-1)!] = value
  }
  return {
    model: spec.model,
    training_file: spec.training_file,
    validation_file: spec.validation_file ?? null,
    method: { type: spec.method.type, [spec.method.type]: config } as CreateJobBody['method'],
    seed,
    suffix: spec.suffix ?? null,
    metadata: spec.metadata ?? null,
  }
}

/**
 * Refuses a trial the job contract would refuse (a value out of a field's bounds, a wrong type), naming the
 * search-space path that set it.
 */
export function checkTrialSchema(spec: CreateSweepBody, values: TrialValues, body: CreateJobBody): void {
  const errors = Value.Errors(CreateJobBody, body)
  if (!errors.length) return
  const prefix = `/method/${spec.method.type}/`
  for (const e of errors) {
    const at = e.instancePath.startsWith(prefix) ? e.instancePath.slice(prefix.length).replaceAll('/', '.') : null
    const path = at ? Object.keys(values).find((p) => at === p || at.startsWith(`${p}.`)) : undefined
    if (path)
      throw new AppError(
        'invalid_search_space',
        `search_space path '${path}' gives ${JSON.stringify(values[path])}, which a job refuses: ${e.message}.`,
        { param: param(path) },
      )
  }
  throw new AppError(
    'invalid_request',
    `A trial would be an invalid job: ${errors[0]!.instancePath} ${errors[0]!.message}.`,
  )
}

/** Values at each range's ends (the draws may never reach them, but a job must accept them). */
export function rangeEnds(spec: CreateSweepBody, first: TrialValues): TrialValues[] {
  const out: TrialValues[] = []
  for (const [path, dim] of Object.entries(spec.search_space))
    if (isRange(dim))
      for (const end of [dim.min, dim.max])
        out.push({ ...first, [path]: dim.type === 'int' ? (end === dim.min ? Math.ceil(end) : Math.floor(end)) : end })
  return out
}

import { type TSchema, Type } from '@fastify/type-provider-typebox'
import { ERROR_CATALOGUE } from '../errors.js'

export const ErrorDetailSchema = Type.Object(
  {
    line: Type.Optional(Type.Integer()),
    entry: Type.Optional(Type.String()),
    field: Type.Optional(Type.String()),
    message: Type.String(),
  },
  { additionalProperties: false },
)

export const ErrorSchema = Type.Object(
  {
    error: Type.Object({
      message: Type.String(),
      type: Type.String(),
      code: Type.Union(Object.keys(ERROR_CATALOGUE).map((c) => Type.Literal(c))),
      param: Type.Union([Type.String(), Type.Null()]),
      request_id: Type.String(),
      details: Type.Optional(Type.Array(ErrorDetailSchema, { maxItems: 20 })),
    }),
  },
  { $id: 'Error', description: 'Every 4xx and 5xx answer. `code` is stable; see the error catalogue.' },
)

/** The error responses every route can give; routes add their own 400/404/409. */
export function errorResponses(...statuses: number[]) {
  const out: Record<number, TSchema> = {}
  for (const s of [401, 403, 500, 503, ...statuses]) out[s] = Type.Ref('Error')
  return out
}

export const ListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })),
    after: Type.Optional(Type.String({ maxLength: 200, description: 'Id of the last object of the previous page.' })),
  },
  { additionalProperties: false },
)

export const listOf = <T extends TSchema>(item: T) =>
  Type.Object({
    object: Type.Literal('list'),
    data: Type.Array(item),
    has_more: Type.Boolean(),
  })

export const IdParams = Type.Object({ id: Type.String({ maxLength: 200 }) }, { additionalProperties: false })

export const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()])

/** Any JSON value: documented as an object, serialized as is. */
export const AnyObject = Type.Object({}, { additionalProperties: true })

/** A string enum that keeps its literal types and renders as `{type: string, enum: [...]}`. */
export const StringEnum = <T extends string[]>(values: [...T], opts: { description?: string } = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: values, ...opts })

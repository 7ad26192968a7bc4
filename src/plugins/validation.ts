// Request validation with two Ajv instances. Fastify's default Ajv coerces types everywhere, so a JSON
// body `{"n_epochs": "5"}` would pass as 5 and `{"seed": true}` as 1: a client bug (or a probe) silently
// accepted. JSON bodies are typed, so they get an Ajv that never coerces; querystrings, params and
// headers are always strings on the wire and keep coercion ("?limit=5" must become 5).
import { AjvCompiler, type ValidatorFactory } from '@fastify/ajv-compiler'
import type { FastifyServerOptions } from 'fastify'

const buildValidator: ValidatorFactory = (externalSchemas, ajvServerOption) => {
  const factory = AjvCompiler()
  type Opts = Parameters<typeof factory>[1]
  const server = (ajvServerOption ?? {}) as { customOptions?: object; plugins?: unknown[] }
  const customOptions = { removeAdditional: false, allErrors: true, ...server.customOptions }
  const loose = factory(externalSchemas, { ...server, customOptions } as Opts)
  const strict = factory(externalSchemas, {
    ...server,
    customOptions: { ...customOptions, coerceTypes: false },
  } as Opts)
  return (route) => (route.httpPart === 'body' ? strict : loose)(route)
}

/** Fastify `schemaController` option: body validation without coercion, the rest as Fastify does it. */
export const strictBodySchemaController: NonNullable<FastifyServerOptions['schemaController']> = {
  compilersFactory: { buildValidator },
}

// Renders every error in the OpenAI envelope with a stable code. Client faults become AppErrors with
// the field at fault; an unreachable database or Redis is a 503 (retry), and anything else is a masked
// 500 whose details stay in the log under the request id.
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { isTransientError } from '../db/transient.js'
import { AppError, type ErrorDetail } from '../errors.js'

export interface ErrorBody {
  error: {
    message: string
    type: string
    code: string
    param: string | null
    request_id: string
    details?: ErrorDetail[]
  }
}

function fromValidation(err: FastifyError): AppError {
  // For a union such as `"auto" | number`, Ajv reports every branch; the branch-level noise (`const`,
  // `anyOf`) hides the real bound, so keep it only when nothing more specific names the same path.
  const all = err.validation ?? []
  const specific = all.filter((v) => v.keyword !== 'const' && v.keyword !== 'anyOf')
  const issues = all.filter(
    (v) => (v.keyword !== 'const' && v.keyword !== 'anyOf') || !specific.some((s) => s.instancePath === v.instancePath),
  )
  const details: ErrorDetail[] = issues.map((v) => {
    const params = v.params as Record<string, unknown>
    const base = (v.instancePath || '').replace(/^\//, '').replaceAll('/', '.')
    const extra = (params.additionalProperty ?? params.missingProperty) as string | undefined
    const field = [err.validationContext === 'body' ? '' : err.validationContext, base, extra].filter(Boolean).join('.')
    const message = params.additionalProperty ? 'unknown field' : (v.message ?? 'is invalid')
    return { field: field || (err.validationContext ?? 'body'), message }
  })
  const first = details[0]
  return new AppError('invalid_request', first ? `${first.field}: ${first.message}` : err.message, {
    param: first?.field ?? null,
    details,
  })
}

export function toAppError(err: unknown): AppError | null {
  if (err instanceof AppError) return err
  const e = err as FastifyError & { code?: string }
  if (e?.validation) return fromValidation(e)
  switch (e?.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('invalid_json', `The body is not valid JSON: ${e.message}`)
    case 'FST_ERR_HANDLER_TIMEOUT':
      return new AppError('request_timeout', 'The request took too long; retry later.', {
        headers: { 'retry-after': '5' },
      })
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('body_too_large', 'The request body is larger than 1 MiB.')
    case 'FST_REQ_FILE_TOO_LARGE':
      return new AppError('file_too_large', 'The request body is larger than the limit.')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('unsupported_media_type', e.message)
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new AppError('unsupported_media_type', 'This route expects multipart/form-data.')
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new AppError('invalid_request', 'Too many parts in the multipart body: send one `file` part.')
  }
  // busboy's words for a body that ends early or is not multipart inside: the client's fault, not ours.
  if (
    /unexpected end of (form|file|multipart)|malformed part header|boundary not found|part terminated early/i.test(
      e?.message ?? '',
    )
  )
    return new AppError('invalid_multipart', `The multipart body is incomplete or malformed (${e.message}).`)
  if (isTransientError(e))
    return new AppError('service_unavailable', 'A backing service is unavailable; retry in a few seconds.', {
      headers: { 'retry-after': '5' },
    })
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
    return new AppError('invalid_request', e.message)
  return null
}

export function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown) {
  const appError = toAppError(err) ?? new AppError('internal_error', 'Internal error; the request id identifies it.')
  if (appError.status >= 500) req.log.error({ err }, 'request failed')
  for (const [k, v] of Object.entries(appError.headers ?? {})) reply.header(k, v)
  // The OpenAI SDKs retry every 409 unless told otherwise; only a key still in flight is worth retrying.
  if (appError.status === 409) reply.header('x-should-retry', String(appError.code === 'idempotency_key_in_progress'))
  // An early 401/413 answers before the body is read: close the connection rather than read (or wait
  // for) a body nobody will use; the client reconnects for its next request.
  if (appError.status === 401 || appError.status === 413) reply.header('connection', 'close')
  const body: ErrorBody = {
    error: {
      message: appError.message,
      type: appError.type,
      code: appError.code,
      param: appError.param,
      request_id: String(req.id),
      ...(appError.details?.length ? { details: appError.details } : {}),
    },
  }
  return reply.status(appError.status).send(body)
}

export const errorHandlerPlugin = fp(
  async (app: FastifyInstance) => {
    app.setErrorHandler((err, req, reply) => sendError(req, reply, err))
    app.setNotFoundHandler((req, reply) =>
      sendError(req, reply, new AppError('route_not_found', `No route ${req.method} ${req.url.split('?')[0]}.`)),
    )
  },
  { name: 'error-handler' },
)

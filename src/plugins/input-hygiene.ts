// Poison input fails as a 400 where it enters, whatever the route: a NUL character or an unpaired UTF-16
// surrogate in a path parameter, a query value, any JSON string or key, or a multipart field or file
// name; a JSON number that is not finite (1e999 parses to Infinity). PostgreSQL cannot store NUL in
// text or jsonb, so these used to surface as 500s at the first INSERT; lone surrogates were stored and
// broke every later reader. Dataset contents are checked by the validators (labels) instead.
import type { Multipart } from '@fastify/multipart'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../errors.js'
import { findUnsafeValue, hasUnsafeText } from '../lib/text.js'

function refuse(where: string, path: string, problem: string): never {
  const field = path ? `${where}.${path}` : where
  throw new AppError('unsafe_input', `${field} ${problem}; send plain, finite values.`, { param: field })
}

/** Wraps `req.parts` so every multipart field value and file name is checked as the handler reads it. */
function checkMultipart(req: FastifyRequest) {
  const original = req.parts.bind(req)
  req.parts = ((...args: Parameters<FastifyRequest['parts']>) => {
    const source = original(...args)
    async function* checked(): AsyncGenerator<Multipart> {
      for await (const part of source) {
        if (hasUnsafeText(part.fieldname)) refuse('multipart', 'field name', 'holds a NUL or unpaired surrogate')
        if (part.type === 'file') {
          if (part.filename && hasUnsafeText(part.filename)) {
            part.file.resume()
            refuse('multipart', `${part.fieldname}.filename`, 'holds a NUL or unpaired surrogate')
          }
        } else if (typeof part.value === 'string' && hasUnsafeText(part.value)) {
          refuse('multipart', part.fieldname, 'holds a NUL character or an unpaired UTF-16 surrogate')
        }
        yield part
      }
    }
    return checked()
  }) as FastifyRequest['parts']
}

export const inputHygienePlugin = fp(
  async (app: FastifyInstance) => {
    app.addHook('preValidation', async (req) => {
      for (const [where, value] of [
        ['params', req.params],
        ['query', req.query],
        ['body', req.body],
      ] as const) {
        const bad = findUnsafeValue(value)
        if (bad) refuse(where, bad.path, bad.problem)
      }
      if (req.isMultipart()) checkMultipart(req)
    })
  },
  { name: 'input-hygiene' },
)

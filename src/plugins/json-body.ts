// JSON bodies where an empty one means "no body". The official Python OpenAI SDK sends
// `Content-Type: application/json` with an empty body on every POST and DELETE that takes none
// (cancel, files.delete, models.delete, pause, resume); Fastify's own parser refuses that with
// FST_ERR_CTP_EMPTY_JSON_BODY. A route that needs a body still answers 400 from its schema.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'

export const jsonBodyPlugin = fp(
  async (app: FastifyInstance) => {
    const parseJson = app.getDefaultJsonParser('error', 'error')
    app.removeContentTypeParser('application/json')
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
      if ((body as string).length === 0) return done(null, undefined)
      return parseJson(req, body as string, done)
    })
  },
  { name: 'json-body' },
)

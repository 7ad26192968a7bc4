// Every route declares who may call it in `config.auth`: public, project (an API key) or admin (the
// admin token). A route without the declaration refuses to start the app, so none is open by mistake.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { AppError } from '../errors.js'
import { keyMatches, parseKeyPrefix, tokenEquals } from '../modules/auth/api-keys.js'

export type RouteAuth = 'public' | 'project' | 'admin'

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuth
  }
  interface FastifyRequest {
    /** the calling project's id on project routes */
    projectId: string
  }
}

function bearer(req: FastifyRequest): string {
  const header = req.headers.authorization
  if (!header) throw new AppError('missing_authorization', 'Send `Authorization: Bearer <key>`.')
  const m = /^Bearer\s+(\S+)$/i.exec(header)
  if (!m) throw new AppError('missing_authorization', 'The Authorization header must be `Bearer <key>`.')
  return m[1]
}

export const authPlugin = fp(
  async (app: FastifyInstance) => {
    app.decorateRequest('projectId', '')
    app.addHook('onRoute', (route) => {
      // Fastify's own HEAD twins and the swagger/static routes are declared by their plugins.
      if (route.config?.auth || route.method === 'HEAD') return
      if (route.url.startsWith('/docs')) {
        route.config = { ...(route.config ?? {}), auth: 'public' }
        return
      }
      throw new Error(`route ${route.method} ${route.url} does not declare config.auth`)
    })
    app.addHook('onRequest', async (req) => {
      const auth = req.routeOptions.config?.auth ?? 'public'
      if (auth === 'public') return
      const token = bearer(req)
      if (auth === 'admin') {
        if (tokenEquals(token, app.adminToken)) return
        if (parseKeyPrefix(token) && (await findProjectKey(app, token)))
          throw new AppError('admin_required', 'This route needs the admin token, not a project API key.')
        throw new AppError('invalid_api_key', 'The admin token is not valid.')
      }
      if (tokenEquals(token, app.adminToken))
        throw new AppError(
          'project_key_required',
          'The admin token only works on /v1/admin routes; use a project API key.',
        )
      const key = await findProjectKey(app, token)
      if (!key) throw new AppError('invalid_api_key', 'The API key is not valid or has been revoked.')
      req.projectId = key.projectId
    })
  },
  { name: 'auth', dependencies: ['db'] },
)

async function findProjectKey(app: FastifyInstance, token: string) {
  const prefix = parseKeyPrefix(token)
  if (!prefix) return null
  const key = await app.db.apiKey.findUnique({ where: { prefix } })
  if (!key || key.revokedAt || !keyMatches(token, key.secretHash)) return null
  return key
}

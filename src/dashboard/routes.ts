// The admin dashboard: the page and its assets (our own script and styles, uPlot from node_modules), the
// sign-in session routes, and Bull Board at /admin/queues. Assets are resolved from the project root, so
// the compiled server (dist/) serves the same files as tsx does.

import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { createBullBoard } from '@bull-board/api'
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter'
import { FastifyAdapter } from '@bull-board/fastify'
import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { AppError } from '../errors.js'
import { projectRoot } from '../lib/paths.js'
import { tokenEquals } from '../modules/auth/api-keys.js'
import {
  ADMIN_SESSION_COOKIE,
  ADMIN_SESSION_TTL_S,
  adminSessionOf,
  newAdminSession,
  readCookie,
  revokeAdminSession,
  setSessionCookie,
  signAdminSession,
  verifyAdminSession,
} from '../plugins/admin-session.js'
import { assertSignInAllowed, clearSignInFailures, recordSignInFailure } from '../plugins/sign-in-limiter.js'
import { adminQueues } from '../routes/v1/admin/queues.js'
import { errorResponses, Nullable } from '../schemas/common.js'
import { jsonResponse } from '../schemas/examples.js'

const require = createRequire(import.meta.url)
const BULL_BOARD_FONTS = [
  ...[400, 500, 600].map((weight) => ({ family: 'IBM Plex Sans', pkg: 'ibm-plex-sans', weight })),
  ...[400, 500].map((weight) => ({ family: 'IBM Plex Mono', pkg: 'ibm-plex-mono', weight })),
].map((f) => ({ ...f, file: `${f.pkg}-latin-${f.weight}-normal.woff2` }))
/** Bull Board's own menu hides its links in a dropdown: a plain link back, always on screen. */
const BACK_LINK =
  '<a id="refit-back" href="/admin" style="position:fixed;right:12px;bottom:12px;z-index:1000;padding:6px 10px;border-radius:6px;background:#1d4ed8;color:#fff;font:600 13px system-ui,sans-serif;text-decoration:none">← Refit dashboard</a>'
const GOOGLE_FONTS_LINK = /<link href="https:\/\/fonts\.googleapis\.com\/[^"]*" rel="stylesheet">/
export const DASHBOARD_STATIC_DIR = join(projectRoot, 'src', 'dashboard', 'static')

/** Every file the page may load, by URL name: nothing else is served from disk. */
const ASSETS: Record<string, { path: string; type: string }> = {
  'app.js': { path: join(DASHBOARD_STATIC_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  'style.css': { path: join(DASHBOARD_STATIC_DIR, 'style.css'), type: 'text/css; charset=utf-8' },
  'uPlot.iife.min.js': {
    path: require.resolve('uplot/dist/uPlot.iife.min.js'),
    type: 'text/javascript; charset=utf-8',
  },
  'uPlot.min.css': { path: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
  // Bull Board's fonts (IBM Plex, latin subset), served here instead of from Google Fonts, which the CSP refuses
  ...Object.fromEntries(
    BULL_BOARD_FONTS.map(({ pkg, file }) => [
      file,
      { path: require.resolve(`@fontsource/${pkg}/files/${file}`), type: 'font/woff2' },
    ]),
  ),
}

/** The @font-face rules Bull Board's page gets in place of its Google Fonts stylesheet. */
const BULL_BOARD_FONTS_CSS = BULL_BOARD_FONTS.map(
  ({ family, weight, file }) =>
    `@font-face{font-family:'${family}';font-style:normal;font-display:swap;font-weight:${weight};src:url(/admin/assets/${file}) format('woff2')}`,
).join('\n')

/** Same-origin only, and stricter than the API default: no inline script or style at all. */
const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

const SessionObject = Type.Object({
  object: Type.Literal('admin.session'),
  csrf_token: Nullable(
    Type.String({ description: 'Send it as `x-refit-csrf` on state-changing calls made with the cookie.' }),
  ),
  expires_at: Nullable(Type.Integer({ description: 'Unix seconds' })),
})

const SessionState = Type.Object({ ...SessionObject.properties, signed_in: Type.Boolean() })

const sessionExample = { object: 'admin.session', csrf_token: 'q3N2b0VfZ2hB…', expires_at: 1764413200 }

function sendAsset(reply: FastifyReply, name: string) {
  if (name === 'bull-board-fonts.css')
    return reply
      .header('content-type', 'text/css; charset=utf-8')
      .header('cache-control', 'public, max-age=86400')
      .send(BULL_BOARD_FONTS_CSS)
  const asset = ASSETS[name]
  if (!asset) throw new AppError('route_not_found', `No dashboard asset ${name}.`)
  return reply
    .header('content-type', asset.type)
    .header('cache-control', 'no-cache')
    .header('content-security-policy', DASHBOARD_CSP)
    .send(readFileSync(asset.path))
}

const routes: FastifyPluginAsyncTypebox = async (app) => {
  const indexHtml = join(DASHBOARD_STATIC_DIR, 'index.html')

  app.get('/admin', { config: { auth: 'public' }, schema: { hide: true } }, async (_req, reply) =>
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('cache-control', 'no-store')
      .header('content-security-policy', DASHBOARD_CSP)
      .send(readFileSync(indexHtml)),
  )

  app.get(
    '/admin/assets/:name',
    {
      config: { auth: 'public' },
      schema: { hide: true, params: Type.Object({ name: Type.String({ maxLength: 64 }) }) },
    },
    async (req, reply) => sendAsset(reply, req.params.name),
  )

  app.post(
    '/admin/session',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['admin'],
        operationId: 'createAdminSession',
        summary: 'Sign in to the dashboard: exchanges the admin token for a session cookie',
        description: `Sets \`${ADMIN_SESSION_COOKIE}\` (HttpOnly, SameSite=Strict, signed, expires after ${ADMIN_SESSION_TTL_S / 3600} hours). /v1/admin routes accept it instead of the bearer token; state-changing calls made with it must send \`x-refit-csrf: <csrf_token>\`.`,
        body: Type.Object(
          { token: Type.String({ minLength: 1, maxLength: 512 }) },
          { additionalProperties: false, examples: [{ token: 'refit-admin-…' }] },
        ),
        response: { 201: jsonResponse(SessionObject, sessionExample), ...errorResponses(400, 401, 429) },
      },
    },
    async (req, reply) => {
      await assertSignInAllowed(app, req)
      if (!tokenEquals(req.body.token, app.adminToken)) {
        await recordSignInFailure(app, req)
        throw new AppError('invalid_api_key', 'The admin token is not valid.', { param: 'token' })
      }
      await clearSignInFailures(app, req)
      const session = newAdminSession()
      setSessionCookie(req, reply, signAdminSession(app.adminToken, session), ADMIN_SESSION_TTL_S)
      reply.header('cache-control', 'no-store')
      return reply
        .status(201)
        .send({ object: 'admin.session' as const, csrf_token: session.csrf, expires_at: session.exp })
    },
  )

  app.get(
    '/admin/session',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['admin'],
        operationId: 'getAdminSession',
        summary: "Whether the browser is signed in to the dashboard; the session's CSRF token and expiry",
        description:
          'Public, and always 200, so the page can ask before signing in: `signed_in` is false without a valid session cookie.',
        response: {
          200: jsonResponse(SessionState, { ...sessionExample, signed_in: true }),
          ...errorResponses(),
        },
      },
    },
    async (req, reply) => {
      reply.header('cache-control', 'no-store')
      const s = await adminSessionOf(app, req).catch((err) => {
        if (err instanceof AppError && err.code === 'admin_session_invalid') return null
        throw err
      })
      return {
        object: 'admin.session' as const,
        signed_in: !!s,
        csrf_token: s?.csrf ?? null,
        expires_at: s?.exp ?? null,
      }
    },
  )

  app.delete(
    '/admin/session',
    {
      config: { auth: 'public' },
      schema: {
        tags: ['admin'],
        operationId: 'deleteAdminSession',
        summary: 'Sign out: clears the cookie and invalidates the session, even for copies of the cookie',
        response: {
          200: jsonResponse(Type.Object({ object: Type.Literal('admin.session'), deleted: Type.Boolean() }), {
            object: 'admin.session',
            deleted: true,
          }),
          ...errorResponses(),
        },
      },
    },
    async (req, reply) => {
      const value = readCookie(req, ADMIN_SESSION_COOKIE)
      const session = value ? verifyAdminSession(app.adminToken, value) : null
      if (session) await revokeAdminSession(app, session)
      setSessionCookie(req, reply, '', 0)
      return { object: 'admin.session' as const, deleted: true }
    },
  )

  // Bull Board for the catalogue's queues, with the configured prefix (the producers carry it). Its routes
  // are admin-only (src/plugins/auth.ts). Its page asks Google Fonts for IBM Plex, which the CSP refuses:
  // the link is rewritten to the same fonts served from here, and its header links back to the dashboard.
  app.addHook('onSend', async (req, reply, payload) => {
    if (!req.url.startsWith('/admin/queues') || typeof payload !== 'string') return payload
    if (!String(reply.getHeader('content-type') ?? '').includes('text/html')) return payload
    return payload
      .replace(GOOGLE_FONTS_LINK, '<link href="/admin/assets/bull-board-fonts.css" rel="stylesheet">')
      .replace('<body class="preload">', `<body class="preload">${BACK_LINK}`)
  })
  const serverAdapter = new FastifyAdapter()
  serverAdapter.setBasePath('/admin/queues')
  createBullBoard({
    queues: adminQueues(app).map(({ queue }) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Refit queues', miscLinks: [{ text: '← Refit dashboard', url: '/admin' }] } },
  })
  await app.register(serverAdapter.registerPlugin(), { prefix: '/admin/queues' })
}

export default routes

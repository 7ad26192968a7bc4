// Listens and closes gracefully; nothing else. The app itself is built in app.ts.
import type { FastifyInstance } from 'fastify'
import { buildApp } from './app.js'
import type { Config } from './config.js'

export async function startServer(config: Config, adminToken: string): Promise<FastifyInstance> {
  const app = await buildApp({ config, adminToken })
  // Connections past MAX_CONNECTIONS are closed at accept: one client cannot take every socket.
  app.server.maxConnections = config.maxConnections
  await app.listen({ port: config.port, host: config.host })
  return app
}

// Builds the OpenAPI document from the app itself (routes, schemas, error catalogue): the committed
// openapi/openapi.json is this function's output, and a test fails when they differ.
import { buildApp } from './app.js'
import { loadConfig } from './config.js'

export async function generateOpenApiDocument(): Promise<Record<string, unknown>> {
  // Connections are lazy and never used here; the settings only have to be valid.
  const config = loadConfig({ LOG_LEVEL: 'silent', STORAGE_DIR: process.env.STORAGE_DIR ?? '.data' })
  const app = await buildApp({ config, adminToken: 'openapi-generation-only', logger: false })
  await app.ready()
  const doc = app.swagger() as unknown as Record<string, unknown>
  await app.close()
  return JSON.parse(JSON.stringify(doc))
}

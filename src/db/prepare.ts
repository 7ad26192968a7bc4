import { migrationsDir } from '../lib/paths.js'
import { syncBuiltinModels } from '../modules/models/models-service.js'
import { createDb } from './client.js'
import { applyMigrations, ensureDatabase } from './migrate.js'

/** Start-up: create the database if missing, apply committed migrations, register built-in models. */
export async function prepareDatabase(databaseUrl: string, log: (msg: string) => void = () => {}) {
  if (await ensureDatabase(databaseUrl)) log(`created database ${new URL(databaseUrl).pathname.slice(1)}`)
  await applyMigrations(databaseUrl, migrationsDir, log)
  const db = createDb(databaseUrl, 1)
  try {
    await syncBuiltinModels(db)
  } finally {
    await db.$disconnect()
  }
}

import { fileURLToPath } from 'node:url'
import { defineConfig } from 'prisma/config'

// The Prisma 7 CLI downloads a native schema engine before most commands, which fails offline.
// Pointing PRISMA_SCHEMA_ENGINE_BINARY at any existing file skips it; generate/validate/format never
// run it. Migrations are applied by scripts/migrate.ts and written by scripts/new-migration.sh.
process.env.PRISMA_SCHEMA_ENGINE_BINARY ??= fileURLToPath(new URL('./scripts/no-engine', import.meta.url))

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/refit' },
})

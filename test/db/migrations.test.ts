// The committed SQL migrations must produce exactly schema.prisma: Prisma 6's wasm schema engine diffs
// the migrations (replayed in a shadow database) against the schema and must find nothing to do.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { promisify } from 'node:util'
import pg from 'pg'
import { applyMigrations, ensureDatabase } from '../../src/db/migrate.js'
import { migrationsDir, projectRoot } from '../../src/lib/paths.js'
import { dropDatabase, PG_URL } from '../helpers/env.js'

const run = promisify(execFile)

test('migrations and schema.prisma do not drift (prisma migrate diff is empty)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'refit-drift-'))
  try {
    // Prisma 6 wants the url in the datasource block, Prisma 7 forbids it: diff a v6 copy.
    const schema = await readFile(join(projectRoot, 'prisma/schema.prisma'), 'utf8')
    const v6 = schema.replace(/(provider\s*=\s*"postgresql")/, '$1\n  url      = env("DATABASE_URL")')
    await writeFile(join(dir, 'schema.v6.prisma'), v6)
    const { stdout } = await run(
      process.execPath,
      [
        'node_modules/prisma6/build/index.js',
        'migrate',
        'diff',
        '--config',
        'prisma.migrate.config.ts',
        '--from-migrations',
        'prisma/migrations',
        '--to-schema-datamodel',
        join(dir, 'schema.v6.prisma'),
        '--script',
      ],
      {
        cwd: projectRoot,
        env: {
          ...process.env,
          DATABASE_URL: PG_URL,
          PRISMA_QUERY_ENGINE_LIBRARY: join(projectRoot, 'scripts/no-engine'),
        },
        timeout: 120_000,
      },
    )
    const statements = stdout.split('\n').filter((l) => l.trim() && !l.trim().startsWith('--'))
    assert.deepEqual(
      statements,
      [],
      `schema.prisma differs from the migrations; run npm run db:new-migration:\n${stdout}`,
    )
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

test('the migration runner records migrations in _prisma_migrations and is idempotent', async () => {
  const url = new URL(PG_URL)
  url.pathname = `/refit_test_migrate_${process.pid}`
  try {
    assert.equal(await ensureDatabase(url.toString()), true)
    assert.equal(await ensureDatabase(url.toString()), false)
    const first = await applyMigrations(url.toString(), migrationsDir)
    assert.ok(first.applied.length >= 1)
    const second = await applyMigrations(url.toString(), migrationsDir)
    assert.deepEqual(second, { applied: [], alreadyApplied: first.applied.length })
    const client = new pg.Client({ connectionString: url.toString() })
    await client.connect()
    const { rows } = await client.query('SELECT migration_name, checksum, finished_at FROM "_prisma_migrations"')
    await client.end()
    assert.equal(rows.length, first.applied.length)
    for (const r of rows) {
      assert.match(r.checksum, /^[0-9a-f]{64}$/)
      assert.ok(r.finished_at)
    }
  } finally {
    await dropDatabase(url.toString())
  }
})

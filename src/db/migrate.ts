// Applies prisma/migrations/*/migration.sql in name order and records each in Prisma's own
// `_prisma_migrations` table (same sha256 checksum, same advisory lock), so `prisma migrate deploy`
// stays compatible wherever Prisma's native engine can be downloaded. Used because the Prisma 7 CLI
// cannot run migrations offline (see ../shared/STACK.md).
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'

const PRISMA_MIGRATE_LOCK = 72707369

/** Creates the database named in the URL when it does not exist (connecting to `postgres`). */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  const url = new URL(databaseUrl)
  const name = decodeURIComponent(url.pathname.slice(1))
  const admin = new URL(databaseUrl)
  admin.pathname = '/postgres'
  const client = new pg.Client({ connectionString: admin.toString() })
  await client.connect()
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])
    if (rowCount) return false
    try {
      await client.query(`CREATE DATABASE "${name.replaceAll('"', '""')}"`)
    } catch (err) {
      // 42P04: created meanwhile by another process
      if ((err as { code?: string }).code !== '42P04') throw err
      return false
    }
    return true
  } finally {
    await client.end()
  }
}

export interface MigrationResult {
  applied: string[]
  alreadyApplied: number
}

export async function applyMigrations(
  databaseUrl: string,
  dir: string,
  log: (msg: string) => void = () => {},
): Promise<MigrationResult> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_LOCK])
  try {
    await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
      "id" VARCHAR(36) PRIMARY KEY NOT NULL, "checksum" VARCHAR(64) NOT NULL, "finished_at" TIMESTAMPTZ,
      "migration_name" VARCHAR(255) NOT NULL, "logs" TEXT, "rolled_back_at" TIMESTAMPTZ,
      "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(), "applied_steps_count" INTEGER NOT NULL DEFAULT 0)`)
    const { rows } = await client.query<{ migration_name: string; checksum: string; finished_at: Date | null }>(
      'SELECT migration_name, checksum, finished_at FROM "_prisma_migrations" WHERE rolled_back_at IS NULL',
    )
    const failed = rows.filter((r) => !r.finished_at)
    if (failed.length)
      throw new Error(
        `failed migration(s) present: ${failed.map((r) => r.migration_name).join(', ')}; fix them by hand`,
      )
    const applied = new Map(rows.map((r) => [r.migration_name, r]))
    const names = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'migration.sql')))
      .map((d) => d.name)
      .sort()
    const result: MigrationResult = { applied: [], alreadyApplied: 0 }
    for (const name of names) {
      const sql = readFileSync(join(dir, name, 'migration.sql'), 'utf8')
      const checksum = createHash('sha256').update(sql).digest('hex')
      const prev = applied.get(name)
      if (prev) {
        if (prev.checksum !== checksum) log(`warning: migration ${name} was modified after it was applied`)
        result.alreadyApplied++
        continue
      }
      const id = randomUUID()
      await client.query('INSERT INTO "_prisma_migrations" (id, checksum, migration_name) VALUES ($1, $2, $3)', [
        id,
        checksum,
        name,
      ])
      try {
        await client.query('BEGIN')
        await client.query(sql)
        await client.query('COMMIT')
      } catch (err) {
        await client.query('ROLLBACK')
        await client.query('UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1', [id, String(err)])
        throw new Error(`migration ${name} failed: ${err}`)
      }
      await client.query('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1', [
        id,
      ])
      log(`applied migration ${name}`)
      result.applied.push(name)
    }
    return result
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_LOCK]).catch(() => {})
    await client.end()
  }
}

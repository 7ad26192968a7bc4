import { randomUUID } from 'node:crypto'
import { PrismaPg } from '@prisma/adapter-pg' // must be 7.x: 6.19.3's adapter can't read the `name` column type (prisma/orm#27403)
import pg from 'pg'

// The wasm schema engine's introspection queries return internal types ("char" oid 18, name 19, ...)
// that @prisma/adapter-pg rejects ("Column type 'char' could not be deserialized"). pg already
// returns them as strings, so relabel them as text / text[] before the adapter sees them.
const RELABEL: Record<number, number> = {
  18: 25,
  19: 25,
  22: 25,
  24: 25,
  28: 25,
  30: 25,
  194: 25,
  2205: 25,
  1002: 1009,
  1003: 1009,
}
const relabel = (res: any) => {
  for (const f of res?.fields ?? []) if (RELABEL[f.dataTypeID]) f.dataTypeID = RELABEL[f.dataTypeID]
  return res
}
const origQuery = pg.Client.prototype.query as any
;(pg.Client.prototype as any).query = function (this: unknown, ...args: any[]) {
  const cb = args[args.length - 1]
  if (typeof cb === 'function')
    args[args.length - 1] = (err: unknown, res: unknown) => cb(err, err ? res : relabel(res))
  const r = origQuery.apply(this, args)
  return r && typeof r.then === 'function' ? r.then(relabel) : r
}

// Pass discrete fields, NOT { connectionString }: PrismaPg.connectToShadowDb() does
// new Pool({ ...config, database: shadowName }) and pg lets connectionString override `database`.
function pgConfig(url: string): pg.PoolConfig {
  const u = new URL(url)
  return {
    host: u.hostname,
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password) || undefined,
    database: u.pathname.slice(1),
  }
}

// Upstream connectToShadowDb drops the shadow DB before closing its pool -> "is being accessed by other users".
class MigratePg extends PrismaPg {
  constructor(private cfg: pg.PoolConfig) {
    super(cfg)
  }
  async connectToShadowDb() {
    const admin = await this.connect()
    const database = `prisma_shadow_${randomUUID().replace(/-/g, '')}`
    await admin.executeScript(`CREATE DATABASE "${database}"`)
    const shadow = await new PrismaPg(new pg.Pool({ ...this.cfg, database }), { disposeExternalPool: true }).connect()
    const dispose = shadow.dispose.bind(shadow)
    shadow.dispose = async () => {
      await dispose()
      await admin.executeScript(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`)
      await admin.dispose()
    }
    return shadow
  }
}

export default {
  experimental: { adapter: true },
  engine: 'js',
  adapter: async () =>
    new MigratePg(pgConfig(process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres')),
  schema: 'prisma/.schema.v6.prisma',
  migrations: { path: 'prisma/migrations' },
}

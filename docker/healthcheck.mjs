// The image's HEALTHCHECK, one script for both roles:
// - api / all: GET /healthz on this container answers 200;
// - worker: this container's worker is in the registry (its heartbeat reached Redis within 3 beats).
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'

// A HEALTHCHECK runs beside the main process, not under it: tell the role from what PID 1 runs.
let pid1 = ''
try {
  pid1 = readFileSync('/proc/1/cmdline', 'utf8')
} catch {}
const role = pid1.includes('workers/worker.js') ? 'worker' : 'api'
const fail = (why) => {
  console.error(`unhealthy: ${why}`)
  process.exit(1)
}

if (role === 'worker') {
  const { Redis } = await import('ioredis')
  const prefix = process.env.QUEUE_PREFIX || 'refit'
  const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  redis.on('error', () => {})
  try {
    await redis.connect()
    const ids = await redis.zrange(`${prefix}:registry:workers`, 0, -1)
    const mine = ids.filter((id) => id.startsWith(`${hostname()}-`))
    const alive = mine.length
      ? (await redis.mget(mine.map((id) => `${prefix}:registry:worker:${id}`))).some(Boolean)
      : false
    redis.disconnect()
    if (!alive) fail(`no live registry entry for host ${hostname()}`)
    process.exit(0)
  } catch (err) {
    fail(err.message)
  }
} else {
  const port = process.env.PORT || 8080
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2500) })
    if (!res.ok) fail(`/healthz answered ${res.status}`)
    process.exit(0)
  } catch (err) {
    fail(err.message)
  }
}

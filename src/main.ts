// `npm start`: prepares the database, starts the API in this process and one worker process beside it,
// and prints where everything is. Ctrl-C stops both. With REFIT_ROLE=api it starts the API alone (workers
// run elsewhere: `node dist/workers/worker.js`). A missing PostgreSQL or Redis stops it with a message
// saying how to fix it; a Redis that may evict keys is warned about (and fails /readyz).
import { type ChildProcess, fork } from 'node:child_process'
import { join } from 'node:path'
import { adminTokenSource, ConfigError, loadConfig } from './config.js'
import { prepareDatabase } from './db/prepare.js'
import { projectRoot } from './lib/paths.js'
import { startUnservedJobsCheck } from './modules/workers/unserved-jobs.js'
import { MISSED_HEARTBEATS } from './modules/workers/worker-registry.js'
import { postgresUnreachableMessage, probeRedis } from './observability/startup-checks.js'
import { startServer } from './server.js'

async function main() {
  let config: ReturnType<typeof loadConfig>
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message)
      process.exit(1)
    }
    throw err
  }
  try {
    await prepareDatabase(config.databaseUrl, (m) => console.log(`[refit] ${m}`))
  } catch (err) {
    console.error(`[refit] ${postgresUnreachableMessage(config.databaseUrl, err as Error)}`)
    process.exit(1)
  }
  const redis = await probeRedis(config.redisUrl)
  if (redis.error) {
    console.error(`[refit] ${redis.error}`)
    process.exit(1)
  }
  if (redis.warning) console.warn(`[refit] WARNING: ${redis.warning}`)
  const admin = adminTokenSource(config)
  const adminToken = admin.token
  const app = await startServer(config, adminToken)
  if (redis.warning) app.log.warn({ check: 'redis maxmemory-policy' }, redis.warning)
  // Queued jobs that no live worker can run get a status_reason and an event (unserved-jobs.ts).
  const unserved = startUnservedJobsCheck(app, {
    intervalMs: Math.max(1000, config.workerHeartbeatMs),
    graceMs: config.workerHeartbeatMs * MISSED_HEARTBEATS,
  })

  let worker: ChildProcess | null = null
  if (config.role === 'all') {
    worker = fork(join(projectRoot, 'dist/workers/worker.js'), [], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    worker.on('message', (msg: { type?: string; backend?: string }) => {
      if (msg?.type === 'worker-ready') console.log(`[refit] worker ready: training runs on the ${msg.backend} backend`)
    })
    worker.on('exit', (code, signal) => {
      if (!stopping) {
        console.error(`[refit] worker exited (${code ?? signal}); stopping`)
        void stop(1)
      }
    })
  }

  const address = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${config.port}`
  console.log(
    [
      '',
      worker
        ? `Refit is running (worker pid ${worker.pid}).`
        : 'Refit API is running (REFIT_ROLE=api: no worker here).',
      `  API          ${address}/v1`,
      `  Docs         ${address}/docs   (OpenAPI: ${address}/docs/json)`,
      `  Dashboard    ${address}/admin  (sign in with the admin token; queues at ${address}/admin/queues)`,
      `  Health       ${address}/readyz`,
      // Printed once, by the start that generated it: later starts' output (and logs kept of it) never holds it.
      admin.source === 'generated'
        ? `  Admin token  ${adminToken}   (generated now, kept in ${admin.file}; later starts print the path only)`
        : admin.source === 'file'
          ? `  Admin token  in ${admin.file}`
          : '  Admin token  from REFIT_ADMIN_TOKEN',
      '',
    ].join('\n'),
  )

  let stopping = false
  const stop = async (code = 0) => {
    if (stopping) return
    stopping = true
    unserved.stop()
    worker?.kill('SIGTERM')
    await app.close()
    process.exit(code)
  }
  process.on('SIGINT', () => void stop())
  process.on('SIGTERM', () => void stop())
}

await main()

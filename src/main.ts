// `npm start`: prepares the database, starts the API in this process and one worker process beside it,
// and prints where everything is. Ctrl-C stops both.
import { fork } from 'node:child_process'
import { join } from 'node:path'
import { ConfigError, ensureAdminToken, loadConfig } from './config.js'
import { prepareDatabase } from './db/prepare.js'
import { projectRoot } from './lib/paths.js'
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
    console.error(
      `[refit] cannot prepare PostgreSQL at ${config.databaseUrl}: ${(err as Error).message}\n` +
        '        Is PostgreSQL running? Start it, or set DATABASE_URL.',
    )
    process.exit(1)
  }
  const adminToken = ensureAdminToken(config)
  const app = await startServer(config, adminToken)

  const worker = fork(join(projectRoot, 'dist/workers/worker.js'), [], {
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

  const address = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${config.port}`
  console.log(
    [
      '',
      `Refit is running (worker pid ${worker.pid}).`,
      `  API          ${address}/v1`,
      `  Docs         ${address}/docs   (OpenAPI: ${address}/docs/json)`,
      `  Health       ${address}/readyz`,
      `  Admin token  ${adminToken}`,
      '',
    ].join('\n'),
  )

  let stopping = false
  const stop = async (code = 0) => {
    if (stopping) return
    stopping = true
    worker.kill('SIGTERM')
    await app.close()
    process.exit(code)
  }
  process.on('SIGINT', () => void stop())
  process.on('SIGTERM', () => void stop())
}

await main()

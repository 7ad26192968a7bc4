// Private PostgreSQL and Redis servers for tests that stop and restart them (never the shared ones):
// Redis with an append-only file, as production runs it; a PostgreSQL cluster made by initdb. Both on
// free loopback ports, both removed when stopped for good.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { chmod, chown, mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { waitFor } from './env.js'
import { freePort } from './service.js'

const run = promisify(execFile)

export interface PrivateRedis {
  url: string
  start(): Promise<void>
  stop(): Promise<void>
  destroy(): Promise<void>
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'refit-redis-'))
  const port = await freePort()
  let proc: ChildProcess | null = null
  const api: PrivateRedis = {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      proc = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--appendonly',
          'yes',
          '--save',
          '',
          '--maxmemory-policy',
          'noeviction',
        ],
        { stdio: 'ignore' },
      )
      await waitFor(
        async () => {
          const { stdout } = await run('redis-cli', ['-p', String(port), 'ping'])
          return stdout.trim() === 'PONG'
        },
        10_000,
        'private redis',
      )
    },
    async stop() {
      if (!proc || proc.exitCode !== null) return
      const p = proc
      const exited = new Promise((r) => p.once('exit', r))
      p.kill('SIGTERM')
      await exited
    },
    async destroy() {
      await api.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
  await api.start()
  return api
}

export interface PrivatePostgres {
  /** URL of the `postgres` database; tests create their own databases in it */
  url: string
  start(): Promise<void>
  stop(): Promise<void>
  destroy(): Promise<void>
}

async function pgBin(name: string): Promise<string> {
  const versions = (await readdir('/usr/lib/postgresql')).sort()
  return `/usr/lib/postgresql/${versions.at(-1)}/bin/${name}`
}

/** initdb refuses to run as root: run the server as the `postgres` system user then. */
async function asPostgres(cmd: string, args: string[]) {
  if (userInfo().uid === 0) return run('runuser', ['-u', 'postgres', '--', cmd, ...args])
  return run(cmd, args)
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const dir = await mkdtemp(join(tmpdir(), 'refit-pg-'))
  const data = join(dir, 'data')
  if (userInfo().uid === 0) {
    const { stdout } = await run('id', ['-u', 'postgres'])
    const { stdout: gid } = await run('id', ['-g', 'postgres'])
    await chown(dir, Number(stdout), Number(gid))
    await chmod(dir, 0o700)
  }
  const port = await freePort()
  await asPostgres(await pgBin('initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8'])
  const ctl = await pgBin('pg_ctl')
  const api: PrivatePostgres = {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    async start() {
      await asPostgres(ctl, [
        '-D',
        data,
        '-l',
        join(dir, 'log'),
        '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
        '-w',
        'start',
      ])
    },
    async stop() {
      await asPostgres(ctl, ['-D', data, '-m', 'fast', '-w', 'stop']).catch(() => {})
    },
    async destroy() {
      await api.stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
  await api.start()
  return api
}

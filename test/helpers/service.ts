// Starts the real service (`node dist/src/main.js`: API + worker process) on a free port, as `npm start`
// does, with a test environment's settings. `npm test` builds dist/ first.
import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { projectRoot } from '../../src/lib/paths.js'
import { waitFor } from './env.js'

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}

export interface RunningService {
  url: string
  child: ChildProcess
  output(): string
  stop(): Promise<void>
}

/**
 * `role: 'all'` (default) is `npm start`: the API and a worker process, ready once the worker is; `role:
 * 'api'` is an API process alone (REFIT_ROLE=api), for tests that run their workers with other settings.
 */
export async function startService(
  env: Record<string, string>,
  { role = 'all' }: { role?: 'all' | 'api' } = {},
): Promise<RunningService> {
  const main = join(projectRoot, 'dist/src/main.js')
  if (!existsSync(main)) throw new Error('dist/ is missing: run `npm run build` (npm test does it)')
  const port = await freePort()
  let out = ''
  const child = spawn(process.execPath, [main], {
    env: { ...process.env, ...env, REFIT_ROLE: role, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  const url = `http://127.0.0.1:${port}`
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`service exited early:\n${out}`)
      const res = await fetch(`${url}/readyz`)
      return res.ok && out.includes(role === 'all' ? 'worker ready' : 'Refit API is running')
    },
    // generous: on a machine shared by several agents, the worker's backend self-test alone can take a minute
    180_000,
    'the service to be ready',
  ).catch((err) => {
    child.kill('SIGKILL')
    throw new Error(`${err.message}\n--- service output ---\n${out.slice(-4000)}`)
  })
  return {
    url,
    child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((r) => child.once('exit', r))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** A tiny JSON-over-HTTP client for end-to-end tests. */
export function httpClient(baseUrl: string, token: string) {
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    })
    const text = await res.text()
    let json: any = null
    try {
      json = JSON.parse(text)
    } catch {
      json = text
    }
    return { status: res.status, headers: res.headers, body: json }
  }
  return {
    get: (path: string) => call('GET', path),
    post: (path: string, body?: unknown) => call('POST', path, body),
    del: (path: string) => call('DELETE', path),
    async upload(path: string, file: Buffer, filename: string, fields: Record<string, string>) {
      const form = new FormData()
      for (const [k, v] of Object.entries(fields)) form.append(k, v)
      form.append('file', new Blob([new Uint8Array(file)]), filename)
      const res = await fetch(`${baseUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: form,
      })
      return { status: res.status, body: (await res.json()) as any }
    },
    async download(path: string) {
      const res = await fetch(`${baseUrl}${path}`, { headers: { authorization: `Bearer ${token}` } })
      return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
    },
  }
}

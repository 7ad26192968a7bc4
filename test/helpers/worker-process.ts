// A real worker process (dist/workers/worker.js), as `npm start` runs it, for tests that kill workers.
import { type ChildProcess, fork } from 'node:child_process'
import { join } from 'node:path'
import { projectRoot } from '../../src/lib/paths.js'

export interface WorkerProcess {
  child: ChildProcess
  pid: number
  output(): string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  kill(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export async function startWorkerProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<WorkerProcess> {
  let out = ''
  const child = fork(join(projectRoot, 'dist/workers/worker.js'), [], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  })
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker not ready after ${timeoutMs} ms:\n${out}`)), timeoutMs)
    child.on('message', (m: { type?: string }) => {
      if (m?.type === 'worker-ready') {
        clearTimeout(timer)
        resolve()
      }
    })
    void exited.then(({ code }) => {
      clearTimeout(timer)
      reject(new Error(`worker exited (${code}) before it was ready:\n${out}`))
    })
  })
  return {
    child,
    pid: child.pid!,
    output: () => out,
    exited,
    async kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

export function isAlive(pid: number | null | undefined): boolean {
  if (!pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

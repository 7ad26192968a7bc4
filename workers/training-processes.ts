// The worker's training processes. A job gets a fresh process, except a trial of a sweep, which may get the
// process an earlier trial of the same sweep left idle on this worker: TensorFlow loaded and self-tested, the
// datasets and cached features that trial read still in memory (issue 18: "trials of one sweep may share a
// training process"). A trial's fixed cost was ~3 s of its ~4-5 s when ASHA stopped it after one epoch.
//
// Why only trials of one sweep: they read the same files, so what the process holds is what the next one needs,
// and they follow each other within milliseconds. Every other job still runs alone in its process, which
// gives its memory back to the OS when it exits (wasm memory never shrinks).
//
// Bounds: a process is kept only when its job ended `done` and it reported itself clean (no tensor or session
// left over: training-child.ts checks before it says `idle`) and its resident set is under half its memory
// limit; an idle process exits after IDLE_MS; the processes alive on
// this worker, running and idle, stay within WORKER_CONCURRENCY (a new fork first ends the oldest idle one);
// the memory limit watches a process for its whole life, across its jobs.
import { type ChildProcess, fork } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type MemoryKill, type WatchedChild, watchChildMemory } from '../src/lib/memory-watchdog.js'

const here = dirname(fileURLToPath(import.meta.url))
const compiled = import.meta.url.endsWith('.js')

/** How long a trial's process waits idle for the next trial of its sweep before it exits. */
export const IDLE_MS = 15_000

/** The training process entry: compiled JS when we run from dist/, the TypeScript source under tsx. */
export function trainingProcessCommand(): { path: string; execArgv: string[] } {
  return compiled
    ? { path: join(here, 'children', 'training-child.js'), execArgv: [] }
    : { path: join(here, 'children', 'training-child.ts'), execArgv: ['--import', 'tsx'] }
}

export function forkTrainingProcess(): ChildProcess {
  const { path, execArgv } = trainingProcessCommand()
  return fork(path, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
}

/** A training process and what the worker knows of it. */
export interface TrainingProcess {
  readonly child: ChildProcess
  /** its memory limit, for its whole life (a kill is reported to the job running then) */
  readonly memory: WatchedChild
  /** jobs it finished before the current one (0: a fresh process) */
  jobsDone: number
  /** the job that left it idle (the one before the current) */
  lastJobId: string | null
  /** called when the memory limit kills it: set by the job running it */
  onMemoryKill: ((kill: MemoryKill) => void) | null
}

interface Idle {
  process: TrainingProcess
  key: string
  timer: NodeJS.Timeout
  /** removes it from the list if it exits while idle */
  onExit: () => void
}

export class TrainingProcesses {
  private readonly idle: Idle[] = []
  private busy = 0

  constructor(private readonly opts: { memoryLimitBytes: number; maxAlive: number; idleMs?: number }) {}

  /**
   * A process for a job: the idle one its sweep left (`reuseKey`, null for a job of its own), else a new fork
   * (ending the oldest idle process first when the worker's processes would exceed its concurrency).
   */
  acquire(reuseKey: string | null): TrainingProcess {
    const i = reuseKey === null ? -1 : this.idle.findIndex((e) => e.key === reuseKey && e.process.child.connected)
    this.busy++
    if (i >= 0) {
      const entry = this.idle[i]
      this.forget(entry)
      return entry.process
    }
    while (this.idle.length && this.busy + this.idle.length > this.opts.maxAlive) this.end(this.idle[0])
    const child = forkTrainingProcess()
    const process: TrainingProcess = {
      child,
      memory: watchChildMemory(child, {
        limitBytes: this.opts.memoryLimitBytes,
        onKill: (k) => process.onMemoryKill?.(k),
      }),
      jobsDone: 0,
      lastJobId: null,
      onMemoryKill: null,
    }
    return process
  }

  /**
   * The job is over. `reuseKey` set: the process said it is clean and idle, and waits for the next job of the
   * same key; null: it is ended (or has exited).
   */
  release(process: TrainingProcess, jobId: string, reuseKey: string | null): void {
    this.busy--
    process.onMemoryKill = null
    // one that grew past half its limit would start the next trial with too little room: a fresh one will not
    const grown = process.memory.rssBytes() > this.opts.memoryLimitBytes / 2
    if (reuseKey === null || !process.child.connected || process.memory.killed || grown) {
      this.end({ process })
      return
    }
    process.jobsDone++
    process.lastJobId = jobId
    const entry: Idle = {
      process,
      key: reuseKey,
      timer: setTimeout(() => this.end(entry), this.opts.idleMs ?? IDLE_MS),
      // an idle process that exits (killed from outside) leaves the list
      onExit: () => this.forget(entry),
    }
    entry.timer.unref()
    process.child.once('exit', entry.onExit)
    this.idle.push(entry)
  }

  /** Ends every idle process (the worker is closing). */
  closeIdle(): void {
    for (const e of [...this.idle]) this.end(e)
  }

  /** Takes an idle entry off the list, its timer and exit listener with it. */
  private forget(entry: Idle): void {
    const i = this.idle.indexOf(entry)
    if (i < 0) return
    clearTimeout(entry.timer)
    entry.process.child.off('exit', entry.onExit)
    this.idle.splice(i, 1)
  }

  /** Ends a process: an idle one (off the list first) or one whose job is over. */
  private end(entry: Idle | { process: TrainingProcess }): void {
    if ('key' in entry) this.forget(entry)
    const child = entry.process.child
    // an idle process holds nothing worth a graceful stop; a running one is only ended here when its job is over
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

// The hard memory limit of a training or inference child process. With a usable cgroup v2 the kernel
// enforces it (memory.max; its OOM killer leaves a count in memory.events); everywhere, the parent also
// samples the child's resident set from /proc and SIGKILLs it past the limit, which is the only limit on
// cgroup v1 machines. The parent process (API, worker) is never the one killed: its pid stays.
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { formatBytes } from '../engine/memory-estimate.js'
import { type CgroupDetection, ChildCgroup, detectCgroupV2, realCgroupIo } from './cgroup-v2.js'

/** Resident memory of a process now and at its peak (VmRSS, VmHWM), from /proc/<pid>/status. */
export interface ProcMemory {
  rssBytes: number
  peakRssBytes: number
}

export function readProcMemory(pid: number): ProcMemory | null {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return null
  }
  const kb = (key: string) => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)
    return m ? Number(m[1]) * 1024 : 0
  }
  return { rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') }
}

/** Why a child was killed for memory: the figures that go into the job's failure or the 503. */
export interface MemoryKill {
  by: 'watchdog' | 'cgroup'
  limitBytes: number
  /** resident set when killed (the watchdog), or the cgroup's recorded peak */
  rssBytes: number
}

/** The sentence a job, an evaluation or a 503 gives for a child killed for memory: both figures and the setting. */
export function memoryKillMessage(what: string, k: MemoryKill, setting: string): string {
  return `The ${what} reached ${formatBytes(k.rssBytes)} (${k.rssBytes} bytes), over its ${formatBytes(k.limitBytes)} (${k.limitBytes} bytes, ${setting}) budget, and was killed.`
}

/** Options of watchChildMemory. */
export interface WatchOptions {
  limitBytes: number
  /** how often /proc is sampled */
  intervalMs?: number
  /** the cgroup to put the child in (default: detected once per process) */
  cgroup?: CgroupDetection
  /** called once, right after the child was killed for memory */
  onKill?: (kill: MemoryKill) => void
}

/** A child under a memory limit. */
export interface WatchedChild {
  /** highest resident set seen, from VmHWM (so peaks between samples count) */
  readonly peakRssBytes: number
  /** set when the child was killed for memory */
  readonly killed: MemoryKill | null
  /** resident set now (0 once it exited) */
  rssBytes(): number
  /** which mechanism limits it */
  readonly mechanism: 'cgroup' | 'watchdog'
  stop(): void
}

let detected: CgroupDetection | null = null
/** Detected once per process: the mounts do not change under us. */
export function cgroupSupport(): CgroupDetection {
  detected ??= detectCgroupV2()
  return detected
}

let serial = 0

/**
 * Limits `child` to `limitBytes`: a cgroup when one is usable (falling back to the watchdog alone if
 * joining it fails), and always the RSS watchdog. Stops by itself when the child exits.
 */
export function watchChildMemory(child: ChildProcess, opts: WatchOptions): WatchedChild {
  const pid = child.pid
  const interval = opts.intervalMs ?? 100
  let peak = 0
  let killed: MemoryKill | null = null
  let cgroup: ChildCgroup | null = null
  const support = opts.cgroup ?? cgroupSupport()
  if (support.usable && pid) {
    try {
      cgroup = ChildCgroup.create(
        realCgroupIo,
        support.parent,
        `refit-${process.pid}-${++serial}`,
        pid,
        opts.limitBytes,
      )
    } catch {
      cgroup = null
    }
  }
  const kill = (k: MemoryKill) => {
    if (killed) return
    killed = k
    child.kill('SIGKILL')
    opts.onKill?.(k)
  }
  const sample = () => {
    if (!pid) return
    const m = readProcMemory(pid)
    if (!m) return
    peak = Math.max(peak, m.peakRssBytes, m.rssBytes)
    if (m.rssBytes > opts.limitBytes) kill({ by: 'watchdog', limitBytes: opts.limitBytes, rssBytes: m.rssBytes })
  }
  const timer = setInterval(sample, interval)
  timer.unref()
  const stop = () => {
    clearInterval(timer)
    if (cgroup) {
      if (!killed && cgroup.oomKills() > 0)
        killed = { by: 'cgroup', limitBytes: opts.limitBytes, rssBytes: cgroup.peakBytes() ?? opts.limitBytes }
      cgroup.remove()
      cgroup = null
    }
  }
  child.once('exit', stop)
  sample()
  return {
    get peakRssBytes() {
      return peak
    },
    get killed() {
      return killed
    },
    rssBytes: () => (pid ? (readProcMemory(pid)?.rssBytes ?? 0) : 0),
    mechanism: cgroup ? 'cgroup' : 'watchdog',
    stop,
  }
}

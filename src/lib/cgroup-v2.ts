// A kernel-enforced memory limit for a child process, where the machine offers one: a cgroup v2 (a
// `cgroup2fs` mount) whose memory controller our own cgroup may hand down. On cgroup v1 machines (ours, CI)
// or where the controller is not delegated, detection says why and the RSS watchdog is the only limit.
// Nothing is trusted from a successful mkdir alone: under a v1 layout /sys/fs/cgroup is a tmpfs where mkdir
// "succeeds" and creates a plain directory, so a child cgroup counts only when the kernel populated it with
// `memory.max`.
import { existsSync, mkdirSync, readFileSync, rmdirSync, statfsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** statfs f_type of cgroup2fs */
export const CGROUP2_SUPER_MAGIC = 0x63677270

/** The file-system calls detection and limits make; tests give a fake root. */
export interface CgroupIo {
  read(path: string): string | null
  fsType(path: string): number | null
  exists(path: string): boolean
  mkdir(path: string): void
  rmdir(path: string): void
  write(path: string, text: string): void
}

export const realCgroupIo: CgroupIo = {
  read: (p) => {
    try {
      return readFileSync(p, 'utf8')
    } catch {
      return null
    }
  },
  fsType: (p) => {
    try {
      return Number(statfsSync(p).type)
    } catch {
      return null
    }
  },
  exists: (p) => existsSync(p),
  mkdir: (p) => mkdirSync(p),
  rmdir: (p) => rmdirSync(p),
  write: (p, t) => writeFileSync(p, t),
}

/** Where children get their memory cgroups, or why there is none. */
export type CgroupDetection = { usable: true; parent: string } | { usable: false; reason: string }

/**
 * Finds our own cgroup on a cgroup2fs mount with the memory controller available to its children.
 * `procSelf` is /proc/self (its `mounts` and `cgroup`).
 */
export function detectCgroupV2(io: CgroupIo = realCgroupIo, procSelf = '/proc/self'): CgroupDetection {
  const mounts = io.read(join(procSelf, 'mounts')) ?? ''
  const v2 = mounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2')
    .map((f) => f[1].replace(/\\040/g, ' '))
    .filter((mount) => io.fsType(mount) === CGROUP2_SUPER_MAGIC)
  if (!v2.length) return { usable: false, reason: 'no cgroup2fs mount (cgroup v1 machine)' }
  // "0::/path" is our place in the v2 hierarchy
  const self = (io.read(join(procSelf, 'cgroup')) ?? '').split('\n').find((l) => l.startsWith('0::'))
  const rel = self ? self.slice(3).trim() : '/'
  for (const mount of v2) {
    const parent = join(mount, rel)
    const controllers = (io.read(join(parent, 'cgroup.controllers')) ?? '').trim().split(/\s+/)
    if (!controllers.includes('memory')) continue
    const subtree = (io.read(join(parent, 'cgroup.subtree_control')) ?? '').trim().split(/\s+/)
    if (!subtree.includes('memory')) {
      try {
        io.write(join(parent, 'cgroup.subtree_control'), '+memory')
      } catch (err) {
        return {
          usable: false,
          reason: `cannot enable the memory controller for children of ${parent}: ${(err as Error).message}`,
        }
      }
    }
    // prove it: a child cgroup the kernel populated
    const probe = join(parent, `refit-probe-${process.pid}`)
    try {
      io.mkdir(probe)
    } catch (err) {
      return { usable: false, reason: `cannot create a cgroup under ${parent}: ${(err as Error).message}` }
    }
    const real = io.exists(join(probe, 'memory.max'))
    try {
      io.rmdir(probe)
    } catch {
      // a plain directory on a fake mount: nothing to undo that matters
    }
    if (!real) return { usable: false, reason: `a directory made under ${parent} has no memory.max: not a cgroup` }
    return { usable: true, parent }
  }
  return { usable: false, reason: 'no cgroup2fs mount offers the memory controller' }
}

/** A child's own memory cgroup: created, limited, joined by the child, read after it exits, removed. */
export class ChildCgroup {
  private constructor(
    private readonly io: CgroupIo,
    readonly path: string,
  ) {}

  /** Creates `<parent>/<name>` with `memory.max = limitBytes` (no swap) and moves `pid` into it. */
  static create(io: CgroupIo, parent: string, name: string, pid: number, limitBytes: number): ChildCgroup {
    const path = join(parent, name)
    io.mkdir(path)
    const cg = new ChildCgroup(io, path)
    try {
      if (!io.exists(join(path, 'memory.max'))) throw new Error(`${path} has no memory.max`)
      io.write(join(path, 'memory.max'), String(limitBytes))
      if (io.exists(join(path, 'memory.swap.max'))) io.write(join(path, 'memory.swap.max'), '0')
      io.write(join(path, 'cgroup.procs'), String(pid))
      return cg
    } catch (err) {
      cg.remove()
      throw err
    }
  }

  /** Times the kernel's OOM killer killed a process of this cgroup. */
  oomKills(): number {
    const events = this.io.read(join(this.path, 'memory.events')) ?? ''
    const m = /^oom_kill (\d+)/m.exec(events)
    return m ? Number(m[1]) : 0
  }

  /** Highest memory use the kernel recorded (memory.peak, kernels >= 5.19), or null. */
  peakBytes(): number | null {
    const raw = this.io.read(join(this.path, 'memory.peak'))
    return raw ? Number(raw.trim()) : null
  }

  remove(): void {
    try {
      this.io.rmdir(this.path)
    } catch {
      // still has a process for a moment; the kernel keeps an empty cgroup harmlessly
    }
  }
}

// The hard memory limit: cgroup v2 detection on fake file systems (a v1 machine like ours, a delegated v2,
// a mkdir that "succeeds" without creating a cgroup) and the RSS watchdog killing a real child process.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { test } from 'node:test'
import { CGROUP2_SUPER_MAGIC, type CgroupIo, detectCgroupV2 } from '../../src/lib/cgroup-v2.js'
import { watchChildMemory } from '../../src/lib/memory-watchdog.js'

/** A fake file system: files by path, cgroup2fs at `v2mounts`, mkdir populating memory.max when `kernel`. */
function fakeIo(files: Record<string, string>, v2mounts: string[], kernel: boolean): CgroupIo {
  const fs = new Map(Object.entries(files))
  return {
    read: (p) => fs.get(p) ?? null,
    fsType: (p) => (v2mounts.includes(p) ? CGROUP2_SUPER_MAGIC : 0x01021994),
    exists: (p) => fs.has(p),
    mkdir: (p) => {
      fs.set(`${p}/`, '')
      if (kernel) fs.set(`${p}/memory.max`, 'max\n')
    },
    rmdir: (p) => {
      for (const k of [...fs.keys()]) if (k.startsWith(`${p}/`)) fs.delete(k)
    },
    write: (p, t) => {
      fs.set(p, t)
    },
  }
}

test('cgroup v1 with a hybrid cgroup2 mount that lacks the memory controller (our machines): not usable', () => {
  const io = fakeIo(
    {
      '/proc/self/mounts':
        'tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n',
      '/proc/self/cgroup': '4:memory:/x\n0::/\n',
      '/sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n',
    },
    ['/sys/fs/cgroup/unified'],
    false,
  )
  const d = detectCgroupV2(io)
  assert.equal(d.usable, false)
})

test('no cgroup2fs mount at all: not usable, and a mkdir is never taken as proof', () => {
  const io = fakeIo({ '/proc/self/mounts': 'tmpfs /sys/fs/cgroup tmpfs rw 0 0\n' }, [], false)
  const d = detectCgroupV2(io)
  assert.deepEqual(d, { usable: false, reason: 'no cgroup2fs mount (cgroup v1 machine)' })
})

test('a cgroup2 mount where mkdir creates a plain directory: not usable', () => {
  const io = fakeIo(
    {
      '/proc/self/mounts': 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n',
      '/proc/self/cgroup': '0::/service\n',
      '/sys/fs/cgroup/service/cgroup.controllers': 'cpu memory pids\n',
      '/sys/fs/cgroup/service/cgroup.subtree_control': 'memory\n',
    },
    ['/sys/fs/cgroup'],
    false,
  )
  const d = detectCgroupV2(io)
  assert.equal(d.usable, false)
  assert.match((d as { reason: string }).reason, /no memory.max: not a cgroup/)
})

test('a delegated cgroup v2 with the memory controller: usable under our own cgroup', () => {
  const io = fakeIo(
    {
      '/proc/self/mounts': 'cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n',
      '/proc/self/cgroup': '0::/service\n',
      '/sys/fs/cgroup/service/cgroup.controllers': 'cpu memory pids\n',
      '/sys/fs/cgroup/service/cgroup.subtree_control': '\n',
    },
    ['/sys/fs/cgroup'],
    true,
  )
  assert.deepEqual(detectCgroupV2(io), { usable: true, parent: '/sys/fs/cgroup/service' })
  assert.equal(io.read('/sys/fs/cgroup/service/cgroup.subtree_control'), '+memory')
})

test('the RSS watchdog kills a child that grows past its limit; the parent stays', async () => {
  // grows by 16 MB every 20 ms and never stops
  const child = spawn(process.execPath, ['-e', 'const k=[];setInterval(()=>k.push(Buffer.alloc(16*1024*1024,1)),20)'], {
    stdio: 'ignore',
  })
  let reported: unknown = null
  const watched = watchChildMemory(child, {
    limitBytes: 200 * 1024 ** 2,
    intervalMs: 20,
    cgroup: { usable: false, reason: 'test' },
    onKill: (k) => {
      reported = k
    },
  })
  const [, signal] = (await new Promise((r) => child.once('exit', (...a) => r(a)))) as [number | null, string | null]
  assert.equal(signal, 'SIGKILL')
  assert.equal(watched.mechanism, 'watchdog')
  assert.equal(watched.killed?.by, 'watchdog')
  assert.equal(watched.killed?.limitBytes, 200 * 1024 ** 2)
  assert.ok((watched.killed?.rssBytes ?? 0) > 200 * 1024 ** 2)
  assert.deepEqual(reported, watched.killed)
  assert.ok(watched.peakRssBytes >= watched.killed!.rssBytes)
})

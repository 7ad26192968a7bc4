// Load benchmark: starts the real API in its own process (as test/helpers/service.ts does, API only: no
// worker is needed to read and create jobs), measures requests/s and p50/p99 latency for GET a job, list
// jobs and create jobs, then drives each at 3x the measured capacity and reports what came back (only
// 2xx/429/503 is acceptable) and how fast the server answered normally again. Prints a table and writes
// bench/results/load.json. Figures, not assertions: run it on a quiet machine.
//
//   npm run bench:load               (builds dist/, then about 2 minutes)
import { randomUUID } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { ADMIN_TOKEN, createTestEnv } from '../test/helpers/env.js'
import { startApiProcess } from './service-bench.js'

const DURATION_S = 10
const CONNECTIONS = 20
const OVERLOAD_CONNECTIONS = 200

await main()

interface Phase {
  scenario: string
  mode: 'capacity' | 'overload'
  target_rps: number | null
  rps: number
  /** 2xx answers per second: the capacity that counts */
  ok_rps: number
  p50_ms: number
  p99_ms: number
  requests: number
  status: Record<string, number>
  errors: number
  timeouts: number
  unexpected: number
  recovery_ms?: number
}

async function main() {
  const env = await createTestEnv('bench', {
    LOG_LEVEL: 'error',
    // Capacity, not policy, is measured: the per-key limits would otherwise answer first.
    RATE_LIMIT_PER_MINUTE: '10000000',
    MAX_CONCURRENT_JOBS: '10000',
    STORAGE_QUOTA_BYTES: String(2 ** 40),
    REQUEST_TIMEOUT_MS: '2000',
    // Shed on event-loop delay only: a saturated single process is ~100% utilized at its best throughput,
    // so utilization would shed exactly when it serves most.
    MAX_EVENT_LOOP_DELAY_MS: '200',
  })
  const api = await startApiProcess(env.env)
  const url = api.url
  const results: Phase[] = []
  try {
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }
    const project = await (
      await fetch(`${url}/v1/admin/projects`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ name: 'bench' }),
      })
    ).json()
    const { key } = await (
      await fetch(`${url}/v1/admin/projects/${project.id}/api_keys`, { method: 'POST', headers: admin, body: '{}' })
    ).json()
    const auth = { authorization: `Bearer ${key}` }
    const form = new FormData()
    form.append('purpose', 'fine-tune')
    form.append('file', new Blob(['x1,x2,label\n1,2,a\n3,4,b\n']), 'bench.csv')
    const file = await (await fetch(`${url}/v1/files`, { method: 'POST', headers: auth, body: form })).json()
    const createBody = JSON.stringify({ model: 'mnist-cnn', training_file: file.id })
    const jobHeaders = { ...auth, 'content-type': 'application/json' }
    const job = await (
      await fetch(`${url}/v1/fine_tuning/jobs`, { method: 'POST', headers: jobHeaders, body: createBody })
    ).json()
    if (!job.id) throw new Error(`could not create a job: ${JSON.stringify(job)}`)

    const scenarios: { name: string; opts: autocannon.Options }[] = [
      { name: 'GET a job', opts: { url: `${url}/v1/fine_tuning/jobs/${job.id}`, headers: auth } },
      { name: 'list jobs', opts: { url: `${url}/v1/fine_tuning/jobs?limit=20`, headers: auth } },
      {
        name: 'create jobs',
        opts: {
          url,
          requests: [
            {
              method: 'POST',
              path: '/v1/fine_tuning/jobs',
              headers: jobHeaders,
              body: createBody,
              setupRequest: (req) => ({ ...req, headers: { ...req.headers, 'idempotency-key': randomUUID() } }),
            },
          ],
        },
      },
    ]
    for (const s of scenarios) {
      const capacity = await run(s.name, 'capacity', { ...s.opts, connections: CONNECTIONS })
      results.push(capacity)
      await settle(url)
      const target = Math.ceil(capacity.ok_rps * 3)
      const overload = await run(s.name, 'overload', {
        ...s.opts,
        connections: OVERLOAD_CONNECTIONS,
        overallRate: target,
        timeout: 10,
      })
      overload.target_rps = target
      overload.recovery_ms = await recovery(`${url}/v1/fine_tuning/jobs/${job.id}`, auth)
      results.push(overload)
      await settle(url)
    }
  } finally {
    await api.stop()
    await env.cleanup()
  }

  print(results)
  const dir = join(fileURLToPath(new URL('.', import.meta.url)), 'results')
  await mkdir(dir, { recursive: true })
  await writeFile(
    join(dir, 'load.json'),
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        node: process.version,
        cpus: availableParallelism(),
        duration_s: DURATION_S,
        connections: { capacity: CONNECTIONS, overload: OVERLOAD_CONNECTIONS },
        note: 'load generator and API share the machine; API only (no worker); limits raised so capacity is measured',
        results,
      },
      null,
      2,
    )}\n`,
  )
  console.log(`\nwritten: bench/results/load.json`)
}

async function run(scenario: string, mode: Phase['mode'], opts: autocannon.Options): Promise<Phase> {
  const r = await autocannon({ ...opts, duration: DURATION_S })
  const status: Record<string, number> = {}
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) status[code] = (v as { count: number }).count
  const unexpected = Object.entries(status)
    .filter(([code]) => !(code.startsWith('2') || code === '429' || code === '503'))
    .reduce((n, [, c]) => n + c, 0)
  return {
    scenario,
    mode,
    target_rps: null,
    rps: Math.round(r.requests.average),
    ok_rps: Math.round(
      Object.entries(status)
        .filter(([code]) => code.startsWith('2'))
        .reduce((n, [, c]) => n + c, 0) / DURATION_S,
    ),
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    requests: r.requests.total,
    status,
    errors: r.errors,
    timeouts: r.timeouts,
    unexpected,
  }
}

/** Time from the end of an overload until 10 GETs in a row answer 200. */
async function recovery(jobUrl: string, headers: Record<string, string>): Promise<number> {
  const start = Date.now()
  let streak = 0
  while (Date.now() - start < 60_000) {
    const res = await fetch(jobUrl, { headers }).catch(() => null)
    await res?.arrayBuffer()
    streak = res?.status === 200 ? streak + 1 : 0
    if (streak === 10) return Date.now() - start
    await new Promise((r) => setTimeout(r, 50))
  }
  return -1
}

async function settle(url: string) {
  await new Promise((r) => setTimeout(r, 2000))
  await fetch(`${url}/healthz`).catch(() => null)
}

function print(results: Phase[]) {
  const rows = results.map((p) => ({
    scenario: p.scenario,
    mode: p.mode,
    'target/s': p.target_rps ?? '',
    'req/s': p.rps,
    '2xx/s': p.ok_rps,
    'p50 ms': p.p50_ms,
    'p99 ms': p.p99_ms,
    statuses: Object.entries(p.status)
      .map(([c, n]) => `${c}:${n}`)
      .join(' '),
    'errors/timeouts': `${p.errors}/${p.timeouts}`,
    'other than 2xx/429/503': p.unexpected,
    'recovery ms': p.recovery_ms ?? '',
  }))
  console.table(rows)
}

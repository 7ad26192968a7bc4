// Inference throughput and latency through the HTTP API of the real service (API + inference processes +
// worker), for mnist-cnn and mobilenet-v2 at batch 1 and 32, idle and while a training job runs.
//
//   npm run build && npx tsx bench/inference.ts [--seconds 8] [--warmup 2] [--concurrency 2]
//
// Writes bench/results/inference.json and prints a table. Figures depend on the machine and on what else
// runs on it; the JSON records the core count and load average next to them.
//
// The clients share the machine's cores with the service, so they cost as little as a client can: each
// scenario's body is serialized once, and requests go through a keep-alive node:http agent (fetch cost
// 2.7-4 ms of CPU per request here, on the same 2 cores the service runs on). The JSON also records the
// CPU each process spent per request.

import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request as httpRequest } from 'node:http'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import sharp from 'sharp'
import { makeMnistDataset } from '../scripts/make-mnist-dataset.js'
import { loadMnist } from '../src/engine/mnist-idx.js'
import { projectRoot } from '../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, waitFor } from '../test/helpers/env.js'
import { httpClient, startService } from '../test/helpers/service.js'

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    /** unmeasured traffic before each scenario */
    warmup: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '2' },
    /** `idle` skips the measurements beside a training job */
    conditions: { type: 'string', default: 'idle,training' },
  },
})
const seconds = Number(values.seconds)
const warmupSeconds = Number(values.warmup)
const concurrency = Number(values.concurrency)

interface Row {
  model: string
  batch: number
  condition: 'idle' | 'training'
  requests: number
  predictions_per_second: number
  p50_ms: number
  p99_ms: number
  backend: string
  /** how the inference process ran the model: the compiled TensorFlow graph or the layers op by op */
  forward: string
  /** p50s of the answer's Server-Timing: the inference process's work, and the API's round trip to it */
  forward_p50_ms: number
  pool_p50_ms: number
  /** CPU each kind of process spent per request over the measurement (Linux /proc; all inference processes summed) */
  cpu_ms_per_request: Record<string, number>
}

/** The process `root` and its descendants (Linux /proc), by role: api, worker, inference, other. */
function processTree(root: number): Map<number, string> {
  const parent = new Map<number, number>()
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8')
      parent.set(Number(d), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // exited meanwhile
    }
  }
  const roles = new Map<number, string>()
  const add = (pid: number) => {
    let cmd = ''
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    } catch {}
    roles.set(
      pid,
      pid === root
        ? 'api'
        : cmd.includes('inference-child')
          ? 'inference'
          : cmd.includes('worker')
            ? 'worker'
            : 'other',
    )
    for (const [child, pp] of parent) if (pp === pid) add(child)
  }
  add(root)
  roles.set(process.pid, 'client')
  return roles
}

/** CPU time (user + system, all threads) a process has used, ms; 0 once it is gone. */
function cpuMs(pid: number): number {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) * (1000 / 100)
  } catch {
    return 0
  }
}

/** One POST with a pre-serialized JSON body over a keep-alive connection: status, headers and parsed body. */
function postJson(agent: Agent, url: string, token: string, body: Buffer) {
  return new Promise<{ status: number; headers: Headers; body: any }>((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'content-length': body.length,
        },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const headers = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers.set(k, v)
          resolve({ status: res.statusCode ?? 0, headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) })
        })
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]

async function main() {
  // the bench measures inference, not the per-key rate limit
  const env = await createTestEnv('bench_inference', { RATE_LIMIT_PER_MINUTE: '10000000' })
  const service = await startService(env.env)
  const work = await mkdtemp(join(tmpdir(), 'refit-bench-'))
  const rows: Row[] = []
  let agent: Agent | undefined
  try {
    const admin = httpClient(service.url, ADMIN_TOKEN)
    const project = await admin.post('/v1/admin/projects', { name: 'bench' })
    const key = (await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, {})).body.key as string
    const api = httpClient(service.url, key)
    const keepAlive = new Agent({ keepAlive: true, maxSockets: concurrency })
    agent = keepAlive

    const digits = loadMnist('test', [0, 1, 2, 3, 4], 32)
    const mnistPngs = await Promise.all(
      Array.from({ length: 32 }, (_, i) =>
        sharp(Buffer.from((digits.x as Uint8Array).subarray(i * 784, (i + 1) * 784)), {
          raw: { width: 28, height: 28, channels: 1 },
        })
          .png()
          .toBuffer(),
      ),
    )
    // a photo-sized JPEG (random pixels compress like a busy photo)
    const noise = Buffer.from(Array.from({ length: 224 * 224 * 3 }, () => Math.floor(Math.random() * 256)))
    const photo = await sharp(noise, { raw: { width: 224, height: 224, channels: 3 } })
      .jpeg({ quality: 85 })
      .toBuffer()
    const inputsFor = (model: string, batch: number) =>
      Array.from({ length: batch }, (_, i) => ({
        image: (model === 'mnist-cnn' ? mnistPngs[i % mnistPngs.length] : photo).toString('base64'),
      }))

    const scenario = async (model: string, batch: number, condition: Row['condition']) => {
      const body = Buffer.from(JSON.stringify({ inputs: inputsFor(model, batch), top_k: 1 }))
      const url = `${service.url}/v1/models/${model}/predictions`
      const call = async () => {
        const t0 = performance.now()
        const r = await postJson(keepAlive, url, key, body)
        if (r.status !== 200) throw new Error(`${model}: ${r.status} ${JSON.stringify(r.body)}`)
        const timing = Object.fromEntries(
          (r.headers.get('server-timing') ?? '')
            .split(',')
            .map((m) => /^\s*(\w+);dur=([\d.]+)/.exec(m))
            .filter((m) => m !== null)
            .map((m) => [m[1], Number(m[2])]),
        )
        return {
          ms: performance.now() - t0,
          backend: r.body.backend as string,
          forward: r.body.forward as string,
          forwardMs: timing.forward as number,
          poolMs: timing.pool as number,
        }
      }
      // Warm-up, unmeasured: every process loaded the model and the request path is JIT-compiled, as a service
      // serves after its first seconds (the first 8 s of a fresh API cost up to 1.7x the CPU per request of the
      // next 8 s: what was measured was V8 compiling). At least `concurrency` rounds so every process is warm.
      const warmEnd = performance.now() + warmupSeconds * 1000
      for (let i = 0; i < concurrency || performance.now() < warmEnd; i++)
        await Promise.all(Array.from({ length: concurrency }, call))
      const latencies: number[] = []
      const forwardMs: number[] = []
      const poolMs: number[] = []
      let backend = ''
      let forward = ''
      const roles = processTree(service.child.pid!)
      const cpuBefore = new Map([...roles.keys()].map((p) => [p, cpuMs(p)]))
      const start = performance.now()
      const end = start + seconds * 1000
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end || latencies.length < 3) {
            const r = await call()
            latencies.push(r.ms)
            forwardMs.push(r.forwardMs)
            poolMs.push(r.poolMs)
            backend = r.backend
            forward = r.forward
          }
        }),
      )
      const elapsed = (performance.now() - start) / 1000
      const cpu: Record<string, number> = {}
      for (const [pid, role] of roles) cpu[role] = (cpu[role] ?? 0) + cpuMs(pid) - cpuBefore.get(pid)!
      for (const role of Object.keys(cpu)) cpu[role] = Math.round((cpu[role] / latencies.length) * 100) / 100
      for (const l of [latencies, forwardMs, poolMs]) l.sort((a, b) => a - b)
      const row: Row = {
        model,
        batch,
        condition,
        requests: latencies.length,
        predictions_per_second: Math.round(((latencies.length * batch) / elapsed) * 10) / 10,
        p50_ms: Math.round(quantile(latencies, 0.5) * 10) / 10,
        p99_ms: Math.round(quantile(latencies, 0.99) * 10) / 10,
        backend,
        forward,
        forward_p50_ms: quantile(forwardMs, 0.5),
        pool_p50_ms: quantile(poolMs, 0.5),
        cpu_ms_per_request: cpu,
      }
      console.log(JSON.stringify(row))
      rows.push(row)
    }
    const all = async (condition: Row['condition']) => {
      for (const model of ['mnist-cnn', 'mobilenet-v2'])
        for (const batch of [1, 32]) await scenario(model, batch, condition)
    }

    /** A long transfer job on digits 5-9 keeps the worker's training process busy while we measure again. */
    const besideTraining = async () => {
      const zip = join(work, 'digits.zip')
      await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 6000, out: zip })
      const up = await api.upload('/v1/files', await readFile(zip), 'digits.zip', { purpose: 'fine-tune' })
      await waitFor(
        async () => (await api.get(`/v1/files/${up.body.id}`)).body.status === 'processed',
        60_000,
        'file validation',
      )
      const job = await api.post('/v1/fine_tuning/jobs', {
        model: 'mnist-cnn',
        training_file: up.body.id,
        method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 200, batch_size: 32 } } },
      })
      if (job.status !== 200) throw new Error(`job: ${job.status} ${JSON.stringify(job.body)}`)
      await waitFor(
        async () => {
          const j = (await api.get(`/v1/fine_tuning/jobs/${job.body.id}`)).body
          return j.status === 'running' && (j.progress?.step ?? 0) > 0
        },
        120_000,
        'the training job to be training',
      )
      await all('training')
      const still = (await api.get(`/v1/fine_tuning/jobs/${job.body.id}`)).body.status
      await api.post(`/v1/fine_tuning/jobs/${job.body.id}/cancel`)
      if (still !== 'running') console.warn(`warning: the training job was ${still} by the end of the measurements`)
    }

    await all('idle')
    if (values.conditions.includes('training')) await besideTraining()
  } catch (err) {
    console.error(service.output().slice(-3000))
    throw err
  } finally {
    agent?.destroy()
    await service.stop()
    await env.cleanup()
    await rm(work, { recursive: true, force: true })
  }

  const result = {
    date: new Date().toISOString(),
    cores: availableParallelism(),
    load_average_at_end: loadavg().map((l) => Math.round(l * 100) / 100),
    seconds_per_scenario: seconds,
    warmup_seconds_per_scenario: warmupSeconds,
    concurrency,
    note: 'HTTP round trips through the real service; predictions/s counts inputs (requests x batch)',
    rows,
  }
  await mkdir(join(projectRoot, 'bench', 'results'), { recursive: true })
  await writeFile(join(projectRoot, 'bench', 'results', 'inference.json'), `${JSON.stringify(result, null, 2)}\n`)
  console.log(
    '\nmodel          batch  condition  requests  predictions/s   p50 ms   p99 ms  forward p50  pool p50  backend/path',
  )
  for (const r of rows)
    console.log(
      `${r.model.padEnd(14)} ${String(r.batch).padStart(5)}  ${r.condition.padEnd(9)}  ${String(r.requests).padStart(8)}  ${String(r.predictions_per_second).padStart(13)}  ${String(r.p50_ms).padStart(7)}  ${String(r.p99_ms).padStart(7)}  ${String(r.forward_p50_ms).padStart(11)}  ${String(r.pool_p50_ms).padStart(8)}  ${r.backend}/${r.forward}`,
    )
  console.log(
    `\nwrote bench/results/inference.json (${result.cores} cores, load average ${result.load_average_at_end.join(' ')})`,
  )
}

await main()

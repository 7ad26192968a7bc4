// Shared bits of the service benchmarks: a real service on a fresh test database (createTestEnv +
// startService), a small API client with upload/poll/evaluate helpers, the result file in the common shape
// ({ name, commit, date, backend, machine, quick, ...figures, job_ids }) and a plain-text table printer.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { cpus, tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import yauzl from 'yauzl'
import { projectRoot } from '../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../test/helpers/env.js'
import { freePort, httpClient, type RunningService, startService } from '../test/helpers/service.js'
import { commit } from './common.js'

export const TERMINAL = ['succeeded', 'failed', 'cancelled']

export type Api = ReturnType<typeof httpClient>

/** `--quick` anywhere on the command line: tiny sizes for a smoke test. */
export const QUICK = process.argv.includes('--quick')

/** `--name value` from the command line, else the default. */
export function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback
}

export function machine() {
  return { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown' }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

export const median = (xs: number[]) => {
  if (!xs.length) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

export const round = (x: number, digits = 0) => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Model ids contain ':' (ft:<base>:<suffix>:<id>): always encode them in URLs. */
export const modelPath = (id: string) => `/v1/models/${encodeURIComponent(id)}`

export interface Bench {
  env: TestEnv
  service: RunningService | null
  api: Api
  /** a scratch directory, removed by close() */
  work: string
  close(): Promise<void>
}

/** A project key on a running service. */
export async function projectApi(url: string, name = 'bench'): Promise<Api> {
  const admin = httpClient(url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name })
  if (project.status !== 201) throw new Error(`create project: ${project.status} ${JSON.stringify(project.body)}`)
  const key = await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, {})
  if (key.status !== 201) throw new Error(`create key: ${key.status} ${JSON.stringify(key.body)}`)
  return httpClient(url, key.body.key as string)
}

/** A fresh test environment and a real service (API + worker, as `npm start` runs them) on it. */
export async function startBench(name: string, overrides: Record<string, string> = {}): Promise<Bench> {
  const env = await createTestEnv(`bench_${name}`, {
    RATE_LIMIT_PER_MINUTE: '10000000',
    MAX_CONCURRENT_JOBS: '1000',
    LOG_LEVEL: 'warn',
    ...overrides,
  })
  const work = await mkdtemp(path.join(tmpdir(), `refit-bench-${name}-`))
  let service: RunningService | null = null
  try {
    service = await startService(env.env)
    const api = await projectApi(service.url)
    return {
      env,
      service,
      api,
      work,
      async close() {
        await service?.stop()
        await env.cleanup()
        await rm(work, { recursive: true, force: true })
      },
    }
  } catch (err) {
    await service?.stop()
    await env.cleanup()
    await rm(work, { recursive: true, force: true })
    throw err
  }
}

/** Uploads a file and waits until the worker validated it; returns its id. */
export async function uploadFile(api: Api, file: string, timeoutMs = 300_000): Promise<string> {
  const up = await api.upload('/v1/files', await readFile(file), path.basename(file), { purpose: 'fine-tune' })
  if (up.status !== 201) throw new Error(`upload ${file}: ${up.status} ${JSON.stringify(up.body)}`)
  const id = up.body.id as string
  const f = await waitFor(
    async () => {
      const r = (await api.get(`/v1/files/${id}`)).body
      return r.status !== 'uploaded' && r
    },
    timeoutMs,
    `validation of ${path.basename(file)}`,
  )
  if (f.status !== 'processed') throw new Error(`file ${id} ${f.status}: ${JSON.stringify(f.error ?? f)}`)
  return id
}

export async function createJob(api: Api, body: Record<string, unknown>): Promise<any> {
  const res = await api.post('/v1/fine_tuning/jobs', body)
  if (res.status !== 200) throw new Error(`create job: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

export interface ProgressReading {
  /** ms since the job was followed */
  t: number
  epoch: number
  step: number
  total_steps: number
  total_epochs: number
  samples_per_second: number
}

export interface FollowedJob {
  job: any
  /** client-side: from follow() start to the terminal status seen */
  wall_s: number
  /** client-side: from follow() start to status running first seen (null if never seen) */
  queued_s: number | null
  /** client-side: running first seen to terminal seen */
  running_s: number | null
  readings: ProgressReading[]
}

/** Polls a job until it ends, recording every distinct progress reading. */
export async function followJob(
  api: Api,
  id: string,
  opts: { timeoutMs?: number; pollMs?: number; quiet?: boolean } = {},
): Promise<FollowedJob> {
  const t0 = performance.now()
  const end = t0 + (opts.timeoutMs ?? 3_600_000)
  const readings: ProgressReading[] = []
  let runningAt: number | null = null
  let lastLog = 0
  while (performance.now() < end) {
    const r = await api.get(`/v1/fine_tuning/jobs/${id}`)
    if (r.status !== 200) throw new Error(`GET job ${id}: ${r.status} ${JSON.stringify(r.body)}`)
    const j = r.body
    const now = performance.now()
    if (j.status === 'running' && runningAt === null) runningAt = now
    const p = j.progress
    if (p && typeof p.step === 'number' && p.step !== readings.at(-1)?.step) {
      readings.push({
        t: now - t0,
        epoch: p.epoch,
        step: p.step,
        total_steps: p.total_steps,
        total_epochs: p.total_epochs,
        samples_per_second: p.samples_per_second,
      })
    }
    if (!opts.quiet && now - lastLog > 15_000) {
      lastLog = now
      console.log(
        `  ${id} ${j.status} ${p ? `epoch ${p.epoch}/${p.total_epochs} ${Math.round((p.fraction ?? 0) * 100)}% ${p.samples_per_second} samples/s` : ''}`,
      )
    }
    if (TERMINAL.includes(j.status)) {
      if (runningAt === null && j.started_at) runningAt = t0
      return {
        job: j,
        wall_s: (now - t0) / 1000,
        queued_s: runningAt === null ? null : (runningAt - t0) / 1000,
        running_s: runningAt === null ? null : (now - runningAt) / 1000,
        readings,
      }
    }
    await sleep(opts.pollMs ?? 250)
  }
  throw new Error(`job ${id} did not finish in time`)
}

/** Fails loudly unless the job succeeded. */
export function mustSucceed(f: FollowedJob): any {
  if (f.job.status !== 'succeeded')
    throw new Error(`job ${f.job.id} ${f.job.status}: ${JSON.stringify(f.job.error ?? f.job.status_reason)}`)
  return f.job
}

/**
 * Head-training throughput from progress readings: per epoch, the reading furthest into it (its
 * samples_per_second is the epoch's running average since the epoch began), ignoring readings in the first
 * half of an epoch when there are later ones; median over epochs 2..n (epoch 1 includes warm-up), or over
 * all epochs seen when only one is. The service writes progress at most once a second, so epochs shorter
 * than a few seconds may have no reading.
 */
export function epochThroughput(readings: ProgressReading[]): { per_epoch: Record<number, number>; median: number } {
  const last = new Map<number, ProgressReading>()
  // a reading early in an epoch is mostly warm-up: keep those at least halfway through their epoch, when any are
  const stepsPerEpoch = (r: ProgressReading) => r.total_steps / Math.max(1, r.total_epochs)
  const late = readings.filter((r) => r.step - (r.epoch - 1) * stepsPerEpoch(r) >= 0.5 * stepsPerEpoch(r))
  for (const r of late.length ? late : readings) {
    const prev = last.get(r.epoch)
    if (!prev || r.step > prev.step) last.set(r.epoch, r)
  }
  const perEpoch: Record<number, number> = {}
  for (const [e, r] of [...last.entries()].sort((a, b) => a[0] - b[0])) perEpoch[e] = r.samples_per_second
  const epochs = Object.keys(perEpoch).map(Number)
  const steady = epochs.length > 1 ? epochs.filter((e) => e > 1) : epochs
  return { per_epoch: perEpoch, median: median(steady.map((e) => perEpoch[e]!)) }
}

/** All of a job's events, oldest first. */
export async function jobEvents(api: Api, id: string): Promise<any[]> {
  const out: any[] = []
  let after = ''
  for (;;) {
    const r = await api.get(`/v1/fine_tuning/jobs/${id}/events?limit=100${after ? `&after=${after}` : ''}`)
    if (r.status !== 200) throw new Error(`events ${id}: ${r.status}`)
    out.push(...r.body.data)
    if (!r.body.has_more || !r.body.data.length) break
    after = r.body.data.at(-1).id
  }
  return out.reverse()
}

/** val_accuracy per epoch from GET /metrics: final (last epoch) and best. */
export async function valAccuracy(api: Api, id: string): Promise<{ final: number; best: number; epochs: number }> {
  const r = await api.get(`/v1/fine_tuning/jobs/${id}/metrics?name=val_accuracy`)
  if (r.status !== 200) throw new Error(`metrics ${id}: ${r.status}`)
  const values = (r.body.data as { step: number; value: number }[]).sort((a, b) => a.step - b.step).map((m) => m.value)
  if (!values.length) throw new Error(`job ${id} has no val_accuracy metric rows`)
  return { final: values.at(-1)!, best: Math.max(...values), epochs: values.length }
}

/** POST /v1/models/{id}/evaluations with a file, then polls it until it ends; returns the evaluation. */
export async function evaluate(api: Api, modelId: string, fileId: string, timeoutMs = 900_000): Promise<any> {
  const t0 = performance.now()
  const created = await api.post(`${modelPath(modelId)}/evaluations`, { file: fileId })
  if (created.status !== 201) throw new Error(`evaluate ${modelId}: ${created.status} ${JSON.stringify(created.body)}`)
  const evalId = created.body.id as string
  const done = await waitFor(
    async () => {
      const r = await api.get(`${modelPath(modelId)}/evaluations/${encodeURIComponent(evalId)}`)
      if (r.status !== 200) throw new Error(`GET evaluation: ${r.status} ${JSON.stringify(r.body)}`)
      return (r.body.status === 'succeeded' || r.body.status === 'failed') && r.body
    },
    timeoutMs,
    `evaluation ${evalId} of ${modelId}`,
  )
  if (done.status !== 'succeeded') throw new Error(`evaluation ${evalId} failed: ${JSON.stringify(done.error)}`)
  return { ...done, seconds: (performance.now() - t0) / 1000 }
}

/** Downloads GET /v1/models/{id}/content (`query`: e.g. `?format=saved_model`) and unzips it into `dir`. */
export async function downloadModel(api: Api, modelId: string, dir: string, query = ''): Promise<string> {
  const res = await api.download(`${modelPath(modelId)}/content${query}`)
  if (res.status !== 200) throw new Error(`download ${modelId}: ${res.status} ${res.body.toString().slice(0, 300)}`)
  await mkdir(dir, { recursive: true })
  await unzip(res.body, dir)
  return dir
}

async function unzip(buf: Buffer, dir: string): Promise<void> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, z) => (err ? reject(err) : resolve(z!))),
  )
  await new Promise<void>((resolve, reject) => {
    zip.on('error', reject)
    zip.on('end', () => resolve())
    zip.on('entry', (entry: yauzl.Entry) => {
      if (entry.fileName.endsWith('/')) return zip.readEntry()
      const target = path.join(dir, path.basename(entry.fileName))
      zip.openReadStream(entry, (err, stream) => {
        if (err || !stream) return reject(err)
        const sink = createWriteStream(target)
        stream.pipe(sink)
        once(sink, 'close').then(() => zip.readEntry(), reject)
      })
    })
    zip.readEntry()
  })
}

/** Writes bench/results/<name>.json in the common shape and returns its path. */
export async function writeBenchResult(
  name: string,
  data: { backend: string | null; job_ids: string[] } & Record<string, unknown>,
): Promise<string> {
  const dir = fileURLToPath(new URL('./results/', import.meta.url))
  await mkdir(dir, { recursive: true })
  const file = path.join(dir, `${name}.json`)
  const { backend, job_ids, ...figures } = data
  const out = {
    name,
    commit: commit(),
    date: new Date().toISOString(),
    backend,
    machine: machine(),
    quick: QUICK,
    ...figures,
    job_ids,
  }
  await writeFile(file, `${JSON.stringify(out, null, 2)}\n`)
  return file
}

/** A fixed-width text table. */
export function table(rows: Record<string, unknown>[]): string {
  if (!rows.length) return '(no rows)'
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown) =>
    v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ')
  return [
    line(cols),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map((r) => line(cols.map((c) => cell(r[c])))),
  ].join('\n')
}

/** Runs main, printing the error and the service's output tail on failure. */
export function run(main: () => Promise<void>): void {
  const t0 = performance.now()
  main().then(
    () => console.log(`done in ${Math.round((performance.now() - t0) / 1000)} s`),
    (err) => {
      console.error(err)
      process.exit(1)
    },
  )
}

export interface ApiProcess {
  url: string
  output(): string
  stop(): Promise<void>
}

/**
 * The API alone (`REFIT_ROLE=api`: `npm start` without its worker) in its own process on a free port, for
 * benchmarks that bring their own workers or none. `npm run bench:*` builds dist/ first.
 */
export async function startApiProcess(env: Record<string, string>): Promise<ApiProcess> {
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let out = ''
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist/src/main.js')], {
    env: { ...process.env, ...env, REFIT_ROLE: 'api', PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout?.on('data', (d) => {
    out += d
  })
  child.stderr?.on('data', (d) => {
    out += d
  })
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGTERM')
    await sleep(500)
    if (child.exitCode === null) child.kill('SIGKILL')
  }
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`api exited:\n${out}`)
      return (await fetch(`${url}/readyz`)).ok
    },
    60_000,
    'the API',
  ).catch(async (err) => {
    await stop()
    throw err
  })
  return { url, output: () => out, stop }
}

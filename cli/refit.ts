#!/usr/bin/env node
// `refit`: the command-line client, built on the generated typed client (openapi/client.ts).
// Settings: REFIT_URL (default http://127.0.0.1:8080), REFIT_API_KEY, REFIT_ADMIN_TOKEN, or the flags below.
import { createWriteStream } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { parseArgs } from 'node:util'
import { createRefitClient, multipartBody, type RefitClient, type Schemas } from '../openapi/client.js'

const USAGE = `Usage: refit <command> [options]

  projects create NAME                        create a project (admin token)
  keys create PROJECT_ID [--name N]           create an API key for a project (admin token); shown once
  files upload PATH [--format F] [--label-column C] [--wait]
                                              upload a dataset; --wait waits for its validation
  files get FILE_ID                           show a file
  jobs create --model M --training-file F [--validation-file V] [--method transfer|supervised|distillation]
              [--teacher T] [--epochs N] [--batch-size B] [--seed S] [--suffix X]
  jobs get JOB_ID                             show a job
  jobs follow JOB_ID                          print the job's events and progress live until it ends
  jobs cancel JOB_ID                          cancel a job
  jobs pause JOB_ID                           pause a job (a running one checkpoints mid-epoch first)
  jobs resume JOB_ID                          resume a paused job from its last checkpoint
  sweeps create --model M --training-file F --search PATH=SPEC [--search …] [--trials N] [--parallel P]
              [--strategy grid|random] [--metric val_accuracy|val_loss|accuracy|loss] [--goal maximize|minimize]
              [--method transfer|supervised] [--epochs N] [--batch-size B] [--asha MIN_EPOCHS:FACTOR]
              [--seed S] [--suffix X] [--keep-all-models] [--no-baseline]   or   sweeps create --spec FILE.json
                                              start a hyperparameter sweep; SPEC is v1,v2,… (values) or
                                              [log:|int:|log-int:]MIN..MAX (a range, random only); a random
                                              sweep's first trial runs a lone job's defaults unless --no-baseline
  sweeps get SWEEP_ID                         show a sweep
  sweeps follow SWEEP_ID                      print the sweep's trials live until it ends
  sweeps cancel SWEEP_ID                      cancel a sweep and its unfinished trials
  models download MODEL_ID [-o FILE]          download a model as a zip (default ./<model id>.zip)

Options: --url URL (REFIT_URL, default http://127.0.0.1:8080), --api-key KEY (REFIT_API_KEY),
         --admin-token TOKEN (REFIT_ADMIN_TOKEN), -h/--help.
Exit status: 0 on success; 1 when the API answers an error (its code and message are printed) or a followed
job or sweep does not succeed; 2 on a usage error.`

/** A failure to report: the API's error code (or a local one) and its message. */
class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly exitCode = 1,
  ) {
    super(message)
  }
}

type Options = Record<string, string | boolean | string[] | undefined>

const { values: opts, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        url: { type: 'string' },
        'api-key': { type: 'string' },
        'admin-token': { type: 'string' },
        name: { type: 'string' },
        format: { type: 'string' },
        'label-column': { type: 'string' },
        wait: { type: 'boolean' },
        model: { type: 'string' },
        'training-file': { type: 'string' },
        'validation-file': { type: 'string' },
        method: { type: 'string' },
        teacher: { type: 'string' },
        epochs: { type: 'string' },
        'batch-size': { type: 'string' },
        seed: { type: 'string' },
        suffix: { type: 'string' },
        output: { type: 'string', short: 'o' },
        spec: { type: 'string' },
        search: { type: 'string', multiple: true },
        trials: { type: 'string' },
        parallel: { type: 'string' },
        strategy: { type: 'string' },
        metric: { type: 'string' },
        goal: { type: 'string' },
        asha: { type: 'string' },
        'keep-all-models': { type: 'boolean' },
        'no-baseline': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (err) {
    fail(new CliError('usage', (err as Error).message, 2))
  }
})() as { values: Options; positionals: string[] }

const baseUrl = (opts.url as string | undefined) ?? process.env.REFIT_URL ?? 'http://127.0.0.1:8080'

function client(as: 'project' | 'admin'): RefitClient {
  const apiKey =
    as === 'admin'
      ? ((opts['admin-token'] as string | undefined) ?? process.env.REFIT_ADMIN_TOKEN)
      : ((opts['api-key'] as string | undefined) ?? process.env.REFIT_API_KEY)
  if (!apiKey)
    throw new CliError(
      'usage',
      as === 'admin'
        ? 'an admin token is needed: REFIT_ADMIN_TOKEN or --admin-token'
        : 'an API key is needed: REFIT_API_KEY or --api-key',
      2,
    )
  return createRefitClient({ baseUrl, apiKey })
}

/** The data of a call, or a CliError carrying the API's error envelope. */
function ok<T>(result: { data?: T; error?: unknown; response: Response }): T {
  if (result.error !== undefined || result.data === undefined) throw apiError(result.response, result.error)
  return result.data
}

function apiError(response: Response, body: unknown): CliError {
  const e = (body as { error?: { code?: string; message?: string } } | undefined)?.error
  return new CliError(
    e?.code ?? `http_${response.status}`,
    e?.message ?? `HTTP ${response.status} ${response.statusText}`,
  )
}

function arg(index: number, what: string): string {
  const v = positionals[index]
  if (!v) throw new CliError('usage', `missing ${what}\n\n${USAGE}`, 2)
  return v
}

function integer(name: string): number | undefined {
  const v = opts[name] as string | undefined
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v)) throw new CliError('usage', `--${name} must be a whole number, got "${v}"`, 2)
  return Number(v)
}

const print = (value: unknown) => console.log(JSON.stringify(value, null, 2))
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function main() {
  const [group, command] = positionals
  if (opts.help || !group) {
    console.log(USAGE)
    return 0
  }
  switch (`${group} ${command ?? ''}`.trim()) {
    case 'projects create':
      print(ok(await client('admin').POST('/v1/admin/projects', { body: { name: arg(2, 'NAME') } })))
      return 0
    case 'keys create': {
      const body = opts.name ? { name: opts.name as string } : {}
      print(
        ok(
          await client('admin').POST('/v1/admin/projects/{id}/api_keys', {
            params: { path: { id: arg(2, 'PROJECT_ID') } },
            body,
          }),
        ),
      )
      return 0
    }
    case 'files upload':
      return uploadFile(arg(2, 'PATH'))
    case 'files get':
      print(ok(await client('project').GET('/v1/files/{id}', { params: { path: { id: arg(2, 'FILE_ID') } } })))
      return 0
    case 'jobs create':
      print(ok(await client('project').POST('/v1/fine_tuning/jobs', { body: jobBody() })))
      return 0
    case 'jobs get':
      print(
        ok(await client('project').GET('/v1/fine_tuning/jobs/{id}', { params: { path: { id: arg(2, 'JOB_ID') } } })),
      )
      return 0
    case 'jobs follow':
      return followJob(arg(2, 'JOB_ID'))
    case 'jobs cancel':
      print(
        ok(
          await client('project').POST('/v1/fine_tuning/jobs/{id}/cancel', {
            params: { path: { id: arg(2, 'JOB_ID') } },
          }),
        ),
      )
      return 0
    case 'jobs pause':
      print(
        ok(
          await client('project').POST('/v1/fine_tuning/jobs/{id}/pause', {
            params: { path: { id: arg(2, 'JOB_ID') } },
          }),
        ),
      )
      return 0
    case 'jobs resume':
      print(
        ok(
          await client('project').POST('/v1/fine_tuning/jobs/{id}/resume', {
            params: { path: { id: arg(2, 'JOB_ID') } },
          }),
        ),
      )
      return 0
    case 'sweeps create':
      print(ok(await client('project').POST('/v1/fine_tuning/sweeps', { body: await sweepBody() })))
      return 0
    case 'sweeps get':
      print(
        ok(
          await client('project').GET('/v1/fine_tuning/sweeps/{id}', { params: { path: { id: arg(2, 'SWEEP_ID') } } }),
        ),
      )
      return 0
    case 'sweeps follow':
      return followSweep(arg(2, 'SWEEP_ID'))
    case 'sweeps cancel':
      print(
        ok(
          await client('project').POST('/v1/fine_tuning/sweeps/{id}/cancel', {
            params: { path: { id: arg(2, 'SWEEP_ID') } },
          }),
        ),
      )
      return 0
    case 'models download':
      return downloadModel(arg(2, 'MODEL_ID'))
    default:
      throw new CliError('usage', `unknown command "${positionals.join(' ')}"\n\n${USAGE}`, 2)
  }
}

async function uploadFile(path: string) {
  const api = client('project')
  const bytes = await readFile(path).catch((err) => {
    throw new CliError('file_unreadable', `cannot read ${path}: ${(err as Error).message}`)
  })
  const format = opts.format as Schemas['File']['format'] | undefined
  let file = ok(
    await api.POST('/v1/files', {
      body: {
        purpose: 'fine-tune',
        file: new File([bytes], basename(path)),
        ...(format ? { format } : {}),
        ...(opts['label-column'] ? { label_column: opts['label-column'] as string } : {}),
      },
      bodySerializer: multipartBody,
    }),
  )
  if (opts.wait) {
    console.error(`uploaded ${file.id} (${file.bytes} bytes); waiting for validation…`)
    while (file.status === 'uploaded') {
      await sleep(1000)
      file = ok(await api.GET('/v1/files/{id}', { params: { path: { id: file.id } } }))
    }
  }
  print(file)
  if (file.status === 'error') throw new CliError(file.error?.code ?? 'invalid_file', file.error?.message ?? 'rejected')
  return 0
}

function jobBody() {
  const model = opts.model as string | undefined
  const trainingFile = opts['training-file'] as string | undefined
  if (!model || !trainingFile)
    throw new CliError('usage', `jobs create needs --model and --training-file\n\n${USAGE}`, 2)
  const type = (opts.method as string | undefined) ?? 'transfer'
  if (!['transfer', 'supervised', 'distillation'].includes(type))
    throw new CliError('usage', `--method must be transfer, supervised or distillation, got "${type}"`, 2)
  if (type === 'distillation' && !opts.teacher) throw new CliError('usage', '--method distillation needs --teacher', 2)
  const hyperparameters: Record<string, number> = {}
  const epochs = integer('epochs')
  const batchSize = integer('batch-size')
  if (epochs !== undefined) hyperparameters.n_epochs = epochs
  if (batchSize !== undefined) hyperparameters.batch_size = batchSize
  const settings: Record<string, unknown> = Object.keys(hyperparameters).length ? { hyperparameters } : {}
  if (type === 'distillation') settings.teacher_model = opts.teacher
  const seed = integer('seed')
  return {
    model,
    training_file: trainingFile,
    ...(opts['validation-file'] ? { validation_file: opts['validation-file'] as string } : {}),
    method: { type, ...(Object.keys(settings).length ? { [type]: settings } : {}) },
    ...(seed !== undefined ? { seed } : {}),
    ...(opts.suffix ? { suffix: opts.suffix as string } : {}),
  }
}

/** A `--search` value: `v1,v2,…` (numbers, true/false/null or strings) or `[log:|int:|log-int:]MIN..MAX`. */
function searchDimension(path: string, spec: string) {
  const range = /^(?:(log|int|log-int):)?(-?[\d.e+-]+)\.\.(-?[\d.e+-]+)$/.exec(spec)
  if (range) {
    const [, kind, min, max] = range
    if (Number.isNaN(Number(min)) || Number.isNaN(Number(max)))
      throw new CliError('usage', `--search ${path}: MIN and MAX must be numbers, got "${spec}"`, 2)
    return {
      min: Number(min),
      max: Number(max),
      ...(kind?.startsWith('log') ? { scale: 'log' as const } : {}),
      ...(kind?.endsWith('int') ? { type: 'int' as const } : {}),
    }
  }
  const value = (v: string) => {
    if (v === 'true' || v === 'false') return v === 'true'
    if (v === 'null') return null
    return v !== '' && !Number.isNaN(Number(v)) ? Number(v) : v
  }
  return { values: spec.split(',').map(value) }
}

async function sweepBody() {
  if (opts.spec) {
    const text = await readFile(opts.spec as string, 'utf8').catch((err) => {
      throw new CliError('file_unreadable', `cannot read ${opts.spec}: ${(err as Error).message}`)
    })
    try {
      return JSON.parse(text)
    } catch (err) {
      throw new CliError('usage', `--spec ${opts.spec} is not JSON: ${(err as Error).message}`, 2)
    }
  }
  const searches = (opts.search as string[] | undefined) ?? []
  if (!searches.length)
    throw new CliError('usage', `sweeps create needs --search PATH=SPEC (or --spec FILE)\n\n${USAGE}`, 2)
  const job = jobBody()
  if (job.method.type === 'distillation')
    throw new CliError('usage', 'sweeps create takes --method transfer or supervised', 2)
  const searchSpace: Record<string, ReturnType<typeof searchDimension>> = {}
  for (const s of searches) {
    const eq = s.indexOf('=')
    if (eq <= 0) throw new CliError('usage', `--search must be PATH=SPEC, got "${s}"`, 2)
    searchSpace[s.slice(0, eq)] = searchDimension(s.slice(0, eq), s.slice(eq + 1))
  }
  const dims = Object.values(searchSpace)
  const grid = dims.every((d) => 'values' in d)
  const strategy = (opts.strategy as string | undefined) ?? (grid ? 'grid' : 'random')
  const gridSize = grid ? dims.reduce((n, d) => n * ('values' in d && d.values ? d.values.length : 1), 1) : 0
  const metric = (opts.metric as string | undefined) ?? 'val_accuracy'
  let earlyTermination = null
  if (opts.asha) {
    const m = /^(\d+):(\d+)$/.exec(opts.asha as string)
    if (!m) throw new CliError('usage', `--asha must be MIN_EPOCHS:REDUCTION_FACTOR, got "${opts.asha}"`, 2)
    earlyTermination = { type: 'asha' as const, min_epochs: Number(m[1]), reduction_factor: Number(m[2]) }
  }
  return {
    ...job,
    search_space: searchSpace,
    strategy: strategy as 'grid' | 'random',
    max_trials: integer('trials') ?? (strategy === 'grid' ? gridSize : 10),
    max_parallel: integer('parallel') ?? 1,
    metric: metric as 'val_accuracy' | 'val_loss' | 'accuracy' | 'loss',
    goal: ((opts.goal as string | undefined) ?? (metric.endsWith('loss') ? 'minimize' : 'maximize')) as
      | 'maximize'
      | 'minimize',
    early_termination: earlyTermination,
    ...(opts['keep-all-models'] ? { keep_all_models: true } : {}),
    ...(opts['no-baseline'] ? { baseline_trial: false } : {}),
  }
}

type SseMessage = { event: string; data: string; id?: string }

/**
 * Reads an event stream until `event: done`, handing every message to `handle`; returns done's data. A
 * dropped connection is resumed with `Last-Event-ID`, so no event is printed twice or missed.
 */
async function followStream(
  open: (lastEventId: string | undefined) => Promise<{ response: Response }>,
  handle: (msg: SseMessage, data: unknown) => void,
): Promise<unknown> {
  let lastEventId: string | undefined
  let failures = 0
  for (;;) {
    try {
      const res = await open(lastEventId)
      if (!res.response.ok) {
        const body = await res.response.json().catch(() => undefined)
        throw apiError(res.response, body)
      }
      for await (const msg of sseMessages(res.response.body!)) {
        if (msg.id) lastEventId = msg.id
        failures = 0
        const data = JSON.parse(msg.data || 'null')
        if (msg.event === 'done') return data
        handle(msg, data)
      }
    } catch (err) {
      if (err instanceof CliError) throw err
      if (++failures > 10)
        throw new CliError('stream_failed', `the event stream keeps failing: ${(err as Error).message}`)
    }
    // The connection ended without `done`: resume where it stopped.
    console.error(`connection lost; resuming${lastEventId ? ` after event ${lastEventId}` : ''}…`)
    await sleep(Math.min(10_000, 500 * 2 ** Math.min(failures, 5)))
  }
}

/** Opens a job's or a sweep's live event stream (`…/events?stream=true`), resumed after `lastEventId`. */
function eventStream(path: '/v1/fine_tuning/jobs/{id}/events' | '/v1/fine_tuning/sweeps/{id}/events', id: string) {
  const api = client('project')
  return (lastEventId: string | undefined) =>
    api.GET(path, {
      params: {
        path: { id },
        query: { stream: true },
        header: lastEventId ? { 'last-event-id': lastEventId } : {},
      },
      headers: { accept: 'text/event-stream' },
      parseAs: 'stream',
    })
}

/** A job's or a sweep's event as one line: time, level, message. */
function printEvent(e: { created_at: number; level: string; message: string }) {
  console.log(`${new Date(e.created_at * 1000).toISOString()} [${e.level}] ${e.message}`)
}

/** Follows `GET /v1/fine_tuning/jobs/{id}/events?stream=true` until `event: done`. */
async function followJob(id: string) {
  let lastProgress = ''
  let lastStatus = ''
  const done = (await followStream(eventStream('/v1/fine_tuning/jobs/{id}/events', id), (msg, data) => {
    if (msg.event === 'event') printEvent(data as Schemas['FineTuningJobEvent'])
    else if (msg.event === 'job') {
      const job = data as Schemas['FineTuningJob']
      if (job.status !== lastStatus) {
        lastStatus = job.status
        console.log(`status: ${job.status}`)
      }
      // A finished job's last progress write may be older than its end: its events tell the rest.
      const line = ['running', 'cancelling'].includes(job.status) ? progressLine(job.progress) : ''
      if (line && line !== lastProgress) {
        lastProgress = line
        console.log(line)
      }
    }
  })) as { status: string; fine_tuned_model: string | null }
  console.log(`Job ${done.status}${done.fine_tuned_model ? `: ${done.fine_tuned_model}` : ''}`)
  return done.status === 'succeeded' ? 0 : 1
}

/**
 * Follows `GET /v1/fine_tuning/sweeps/{id}/events?stream=true`: each sweep event (trials started and ended,
 * early terminations, the best so far) as a line, and a progress line when the trial counts change.
 */
async function followSweep(id: string) {
  let lastProgress = ''
  const done = (await followStream(eventStream('/v1/fine_tuning/sweeps/{id}/events', id), (msg, data) => {
    if (msg.event === 'event') printEvent(data as Parameters<typeof printEvent>[0])
    else if (msg.event === 'sweep') {
      const s = data as {
        status: string
        progress: { trials_total: number; trials_created: number; trials_done: number; trials_succeeded: number }
        metric: string
        best_trial: { trial: number; metric_value: number } | null
      }
      const p = s.progress
      const best = s.best_trial
        ? `; best trial ${s.best_trial.trial + 1} (${s.metric} ${s.best_trial.metric_value})`
        : ''
      const line = `progress: ${p.trials_done}/${p.trials_total} trials done, ${p.trials_succeeded} succeeded, ${p.trials_created - p.trials_done} running${best}`
      if (line !== lastProgress) {
        lastProgress = line
        console.log(line)
      }
    }
  })) as { status: string; best_model: string | null }
  console.log(`Sweep ${done.status}${done.best_model ? `: ${done.best_model}` : ''}`)
  return done.status === 'succeeded' ? 0 : 1
}

function progressLine(progress: Record<string, unknown> | null | undefined) {
  if (!progress || typeof progress.epoch !== 'number') return ''
  const p = progress as { epoch: number; total_epochs?: number; step?: number; total_steps?: number; fraction?: number }
  const pct = typeof p.fraction === 'number' ? ` ${Math.round(p.fraction * 100)}%` : ''
  const step = p.step !== undefined ? `, step ${p.step}/${p.total_steps ?? '?'}` : ''
  const rate = typeof progress.samples_per_second === 'number' ? `, ${progress.samples_per_second} samples/s` : ''
  return `progress: epoch ${p.epoch}/${p.total_epochs ?? '?'}${step}${pct}${rate}`
}

/** Server-Sent Events messages of a response body (comments and `retry:` lines skipped). */
async function* sseMessages(body: ReadableStream<Uint8Array>) {
  const decoder = new TextDecoder()
  let buffer = ''
  let msg: { event: string; data: string; id?: string } = { event: 'message', data: '' }
  for await (const chunk of Readable.fromWeb(body as never)) {
    buffer += decoder.decode(chunk as Uint8Array, { stream: true })
    let nl = buffer.indexOf('\n')
    while (nl >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, '')
      buffer = buffer.slice(nl + 1)
      nl = buffer.indexOf('\n')
      if (line === '') {
        if (msg.data !== '' || msg.id) yield msg
        msg = { event: 'message', data: '' }
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon < 0 ? line : line.slice(0, colon)
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'event') msg.event = value
      else if (field === 'data') msg.data = msg.data ? `${msg.data}\n${value}` : value
      else if (field === 'id') msg.id = value
    }
  }
}

async function downloadModel(id: string) {
  const res = await client('project').GET('/v1/models/{id}/content', {
    params: { path: { id } },
    parseAs: 'stream',
  })
  if (!res.response.ok) throw apiError(res.response, await res.response.json().catch(() => undefined))
  const out = (opts.output as string | undefined) ?? `${id.replace(/[^a-zA-Z0-9._-]+/g, '_')}.zip`
  await pipeline(Readable.fromWeb(res.response.body as never), createWriteStream(out))
  console.log(out)
  return 0
}

function fail(err: unknown): never {
  if (err instanceof CliError) {
    console.error(`refit: ${err.code}: ${err.message}`)
    process.exit(err.exitCode)
  }
  const cause = (err as { cause?: { code?: string } }).cause
  console.error(`refit: ${cause?.code ?? 'error'}: ${(err as Error).message} (${baseUrl})`)
  process.exit(1)
}

main().then((code) => process.exit(code), fail)

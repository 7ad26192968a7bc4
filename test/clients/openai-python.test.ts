// The official `openai` Python SDK (3.22.1, the current major, and 2.54.0, the previous one) pointed at
// Refit: test/clients/openai_sdk_check.py makes every files / fine-tuning / models call an OpenAI user's
// script makes, with no workaround, against the real service (API + worker). Each SDK lives in a cached
// venv (test/helpers/python-venv.ts): skipped with a message when it cannot be made, failing under CI=true.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { after, before, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createRefitClient } from '../../openapi/client.js'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv } from '../helpers/env.js'
import { pythonVenv } from '../helpers/python-venv.js'
import { type RunningService, startService } from '../helpers/service.js'

const VERSIONS = ['3.22.1', '2.54.0']
const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'openai_sdk_check.py')
/** What the script must report, in order, for each SDK version. */
const CALLS = [
  'models.list',
  'models.retrieve',
  'files.create',
  'files.wait_for_processing',
  'files.retrieve',
  'files.list(limit=1) auto-pagination',
  "files.list(order='asc', purpose='fine-tune')",
  'files.content',
  'files.delete',
  'files.create chat-format JSONL',
  'jobs.create legacy hyperparameters',
  'jobs.create method.supervised + nulls + learning_rate_multiplier',
  'jobs.create method.transfer',
  'jobs.pause (queued)',
  'jobs.resume',
  'jobs.cancel',
  'jobs.list(limit=1) auto-pagination',
  'jobs.list(metadata=…)',
  'jobs.retrieve (polled to the end)',
  'jobs.list_events(limit=2) auto-pagination',
  'jobs.checkpoints.list(limit=1) auto-pagination',
  'result_files + files.content',
  'files.retrieve_content (deprecated)',
  'jobs.create from a checkpoint name',
  'jobs finish',
  'cancelled job ends cancelled',
  'jobs.pause (running)',
  '409 job_not_pausable',
  '409 job_not_paused',
  'jobs.resume (continued)',
  'models.retrieve (fine-tuned)',
  'models.delete',
  '400 BadRequestError',
  '401 AuthenticationError',
  '404 NotFoundError',
  '409 ConflictError (not retried)',
  '429 RateLimitError',
]

let env: TestEnv
let service: RunningService | undefined
let work: string
let digitsZip: string
const venvs = new Map<string, Awaited<ReturnType<typeof pythonVenv>>>()

before(async () => {
  // Every SDK's venv first (a pip install can take a minute): made between two versions' scripts, it left the
  // client's keep-alive socket idle for as long as the server keeps one, and a reused socket the server had
  // just closed failed the next call ("fetch failed", CI 2026-12-02).
  for (const version of VERSIONS) venvs.set(version, await pythonVenv('openai', version))
  env = await createTestEnv('openai_python')
  work = await mkdtemp(join(tmpdir(), 'refit-openai-py-'))
  digitsZip = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 400, out: digitsZip })
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

async function projectKey(name: string, maxConcurrentJobs?: number) {
  const admin = createRefitClient({ baseUrl: service!.url, apiKey: ADMIN_TOKEN })
  const project = await admin.POST('/v1/admin/projects', { body: { name } })
  if (maxConcurrentJobs)
    await admin.PATCH('/v1/admin/projects/{id}/limits', {
      params: { path: { id: project.data!.id } },
      body: { max_concurrent_jobs: maxConcurrentJobs },
    })
  const key = await admin.POST('/v1/admin/projects/{id}/api_keys', {
    params: { path: { id: project.data!.id } },
    body: { name: 'python' },
  })
  return key.data!.key
}

function runScript(python: string, vars: Record<string, string>) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(python, [SCRIPT], { env: { ...process.env, ...vars, PYTHONUNBUFFERED: '1' } })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.stderr.on('data', (d) => {
      err += d
    })
    child.on('exit', (code) => resolve({ code, out, err }))
  })
}

for (const version of VERSIONS)
  test(`openai ${version} (Python): every files / fine-tuning / models call, unchanged`, async (t) => {
    const venv = venvs.get(version)!
    if ('skip' in venv) {
      t.skip(venv.skip)
      return
    }
    service ??= await startService(env.env)
    const running = service
    assert.equal(running.child.exitCode, null, `the service exited:\n${running.output().slice(-4000)}`)
    const tag = `py${version.replaceAll('.', '')}`
    const { code, out, err } = await runScript(venv.python, {
      REFIT_BASE_URL: `${service.url}/v1`,
      REFIT_API_KEY: await projectKey(`python-${version}`),
      REFIT_LIMITED_KEY: await projectKey(`python-${version}-limited`, 1),
      DIGITS_ZIP: digitsZip,
      TAG: tag,
    })
    const lines = out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { call?: string; ok?: boolean; detail?: string; done?: boolean; version?: string })
    for (const l of lines) if (l.call) t.diagnostic(`${version} ${l.call}: ${l.detail || 'ok'}`)
    assert.equal(code, 0, `the script failed after ${lines.at(-1)?.call ?? 'nothing'}:\n${err.slice(-3000)}`)
    assert.deepEqual(
      lines.filter((l) => l.call).map((l) => l.call),
      CALLS,
    )
    assert.deepEqual(lines.at(-1), { done: true, version })
  })

// The compiled `refit` CLI (dist/cli/refit.js; `npm test` builds it) against the real service: a project and
// a key, an upload, a job followed live to the end, the model downloaded; errors print code and message.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { projectRoot } from '../../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { type RunningService, startService } from '../helpers/service.js'
import { unzipToDir } from '../helpers/zip.js'

const CLI = join(projectRoot, 'dist/cli/refit.js')

let env: TestEnv
let service: RunningService
let work: string

before(async () => {
  if (!existsSync(CLI)) throw new Error('dist/cli/refit.js is missing: run `npm run build` (npm test does it)')
  env = await createTestEnv('cli')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-cli-'))
})

after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** Runs the CLI with only the given settings in its environment (no REFIT_* leaking from the test's). */
function refit(args: string[], vars: Record<string, string> = {}): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REFIT_')))
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { cwd: work, env: { ...clean, REFIT_URL: service.url, ...vars }, timeout: 180_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })
}

test('refit: project, key, upload, job followed to the end, model download; API errors exit non-zero', async () => {
  const project = await refit(['projects', 'create', 'cli-digits'], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  assert.equal(project.code, 0, project.stderr)
  const projectId = JSON.parse(project.stdout).id as string
  assert.match(projectId, /^proj-/)
  // The admin token may come as a flag too.
  const key = await refit(['keys', 'create', projectId, '--name', 'cli', '--admin-token', ADMIN_TOKEN])
  assert.equal(key.code, 0, key.stderr)
  const apiKey = JSON.parse(key.stdout).key as string
  const as = { REFIT_API_KEY: apiKey }

  await makeMnistDataset({
    split: 'train',
    digits: [5, 6, 7, 8, 9],
    format: 'idx',
    limit: 600,
    out: join(work, 'd.zip'),
  })
  const upload = await refit(['files', 'upload', 'd.zip', '--format', 'idx', '--wait'], as)
  assert.equal(upload.code, 0, upload.stderr)
  const file = JSON.parse(upload.stdout)
  assert.equal(file.status, 'processed')
  assert.equal(file.stats.rows, 600)

  const created = await refit(
    ['jobs', 'create', '--model', 'mnist-cnn', '--training-file', file.id, '--epochs', '2', '--seed', '5'],
    as,
  )
  assert.equal(created.code, 0, created.stderr)
  const job = JSON.parse(created.stdout)
  assert.match(job.id, /^ftjob-/)
  assert.equal(job.hyperparameters.n_epochs, 2)
  assert.deepEqual(job.method.type, 'transfer')

  const follow = await refit(['jobs', 'follow', job.id], as)
  assert.equal(follow.code, 0, `${follow.stdout}\n${follow.stderr}`)
  assert.match(follow.stdout, /status: (queued|running)/)
  // Progress is written at most once a second, so a job this short shows one progress line or none (when it
  // ends between two reads); its events show every epoch.
  for (const line of follow.stdout.split('\n').filter((l) => l.startsWith('progress:')))
    assert.match(line, /^progress: epoch [12]\/2, step \d+\/\d+ \d+%/)
  assert.match(follow.stdout, /\[info\] Epoch 1: loss [\d.]+, accuracy/)
  assert.match(follow.stdout, /\[info\] Epoch 2: loss [\d.]+, accuracy/)
  assert.match(follow.stdout, /^status: succeeded$/m)
  const model = /^Job succeeded: (ft:mnist-cnn:\S+)$/m.exec(follow.stdout)?.[1]
  assert.ok(model, `the follow output ends with the model:\n${follow.stdout}`)

  // Following a finished job replays its events and ends at once.
  const replay = await refit(['jobs', 'follow', job.id], as)
  assert.equal(replay.code, 0)
  assert.equal(
    replay.stdout.split('\n').filter((l) => l.includes('[info]')).length,
    follow.stdout.split('\n').filter((l) => l.includes('[info]')).length,
    'the same events, each once',
  )

  const download = await refit(['models', 'download', model, '-o', 'model.zip'], as)
  assert.equal(download.code, 0, download.stderr)
  assert.equal(download.stdout.trim(), 'model.zip')
  await unzipToDir(await readFile(join(work, 'model.zip')), join(work, 'model'))
  const entries = await readdir(join(work, 'model'))
  assert.ok(entries.includes('model.json'), `model.json in ${entries}`)
  assert.equal(JSON.parse(await readFile(join(work, 'model/model.json'), 'utf8')).format, 'layers-model')

  // Errors: the API's code and message on stderr, a non-zero exit.
  const again = await refit(['jobs', 'cancel', job.id], as)
  assert.equal(again.code, 1)
  assert.match(again.stderr, /^refit: job_not_cancellable: /)
  const missing = await refit(['jobs', 'get', 'ftjob-doesnotexist000000000000'], as)
  assert.equal(missing.code, 1)
  assert.match(missing.stderr, /^refit: not_found: /)
  const noKey = await refit(['jobs', 'get', job.id])
  assert.equal(noKey.code, 2)
  assert.match(noKey.stderr, /REFIT_API_KEY/)
  const badKey = await refit(['jobs', 'get', job.id], { REFIT_API_KEY: 'rk-wrong.key' })
  assert.equal(badKey.code, 1)
  assert.match(badKey.stderr, /^refit: \w+: /)
})

test('refit jobs cancel stops a queued or running job', async () => {
  const project = await refit(['projects', 'create', 'cli-cancel'], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const key = await refit(['keys', 'create', JSON.parse(project.stdout).id], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const as = { REFIT_API_KEY: JSON.parse(key.stdout).key }
  const upload = await refit(['files', 'upload', 'd.zip', '--wait'], as)
  const created = await refit(
    ['jobs', 'create', '--model', 'mnist-cnn', '--training-file', JSON.parse(upload.stdout).id, '--epochs', '100'],
    as,
  )
  const cancel = await refit(['jobs', 'cancel', JSON.parse(created.stdout).id], as)
  assert.equal(cancel.code, 0, cancel.stderr)
  assert.ok(['cancelling', 'cancelled'].includes(JSON.parse(cancel.stdout).status))
  const follow = await refit(['jobs', 'follow', JSON.parse(created.stdout).id], as)
  assert.equal(follow.code, 1, 'a job that did not succeed exits 1')
  assert.match(follow.stdout, /^Job cancelled$/m)
})

test('refit jobs pause / resume: paused (a running job after its mid-epoch checkpoint), resumed to the queue', async () => {
  const project = await refit(['projects', 'create', 'cli-pause'], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const key = await refit(['keys', 'create', JSON.parse(project.stdout).id], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const as = { REFIT_API_KEY: JSON.parse(key.stdout).key }
  const upload = await refit(['files', 'upload', 'd.zip', '--wait'], as)
  const created = await refit(
    ['jobs', 'create', '--model', 'mnist-cnn', '--training-file', JSON.parse(upload.stdout).id, '--epochs', '100'],
    as,
  )
  const id = JSON.parse(created.stdout).id
  const notPaused = await refit(['jobs', 'resume', id], as)
  assert.equal(notPaused.code, 1)
  assert.match(notPaused.stderr, /^refit: job_not_paused: /)
  const pause = await refit(['jobs', 'pause', id], as)
  assert.equal(pause.code, 0, pause.stderr)
  const answered = JSON.parse(pause.stdout)
  assert.ok(
    answered.status === 'paused' || (answered.status === 'running' && answered.status_reason === 'pausing'),
    pause.stdout,
  )
  await waitFor(
    async () => JSON.parse((await refit(['jobs', 'get', id], as)).stdout).status === 'paused',
    120_000,
    'the job to be paused',
  )
  const resume = await refit(['jobs', 'resume', id], as)
  assert.equal(resume.code, 0, resume.stderr)
  assert.equal(JSON.parse(resume.stdout).status, 'queued')
  await refit(['jobs', 'cancel', id], as)
  const follow = await refit(['jobs', 'follow', id], as)
  assert.match(follow.stdout, /^Job cancelled$/m)
  const terminal = await refit(['jobs', 'pause', id], as)
  assert.equal(terminal.code, 1)
  assert.match(terminal.stderr, /^refit: job_not_pausable: /)
})

test('refit sweeps create / follow / cancel: trials followed live from the sweep stream to the best model', async () => {
  const project = await refit(['projects', 'create', 'cli-sweeps'], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const key = await refit(['keys', 'create', JSON.parse(project.stdout).id], { REFIT_ADMIN_TOKEN: ADMIN_TOKEN })
  const as = { REFIT_API_KEY: JSON.parse(key.stdout).key }
  const fileId = JSON.parse((await refit(['files', 'upload', 'd.zip', '--wait'], as)).stdout).id
  const base = ['sweeps', 'create', '--model', 'mnist-cnn', '--training-file', fileId, '--seed', '3']

  const bad = await refit([...base, '--search', 'hyperparameters.learning_rate'], as)
  assert.equal(bad.code, 2)
  assert.match(bad.stderr, /--search must be PATH=SPEC/)
  const refused = await refit([...base, '--epochs', '1', '--search', 'hyperparameters.learnin_rate=0.1'], as)
  assert.equal(refused.code, 1)
  assert.match(refused.stderr, /^refit: invalid_search_space: /)

  // a grid of two learning rates (the values parsed as numbers), one at a time
  const created = await refit(
    [...base, '--epochs', '1', '--search', 'hyperparameters.learning_rate=0.01,0.001', '--suffix', 'swp'],
    as,
  )
  assert.equal(created.code, 0, created.stderr)
  const sweep = JSON.parse(created.stdout)
  assert.match(sweep.id, /^sweep-/)
  assert.equal(sweep.strategy, 'grid')
  assert.equal(sweep.max_trials, 2)
  assert.equal(sweep.max_parallel, 1)
  assert.equal(sweep.goal, 'maximize')
  assert.deepEqual(sweep.search_space, { 'hyperparameters.learning_rate': { values: [0.01, 0.001] } })

  const follow = await refit(['sweeps', 'follow', sweep.id], as)
  assert.equal(follow.code, 0, `${follow.stdout}\n${follow.stderr}`)
  for (const re of [
    /\[info\] Created grid sweep /,
    /\[info\] Trial 1 of 2 started as job ftjob-/,
    /\[info\] Trial 2 of 2 started as job ftjob-/,
    /\[info\] Trial 1 succeeded: val_accuracy [\d.]+/,
    /\[info\] Trial 2 succeeded: val_accuracy [\d.]+/,
    /^progress: 2\/2 trials done, 2 succeeded, 0 running; best trial [12] \(val_accuracy [\d.]+\)$/m,
    /\[info\] Sweep succeeded/,
  ])
    assert.match(follow.stdout, re)
  const best = /^Sweep succeeded: (ft:mnist-cnn:swp:\S+)$/m.exec(follow.stdout)?.[1]
  assert.ok(best, follow.stdout)
  const got = JSON.parse((await refit(['sweeps', 'get', sweep.id], as)).stdout)
  assert.equal(got.best_model, best)
  const again = await refit(['sweeps', 'cancel', sweep.id], as)
  assert.equal(again.code, 1)
  assert.match(again.stderr, /^refit: sweep_not_cancellable: /)

  // a random sweep over a log range, cancelled while its first trial trains: follow ends `cancelled`, exit 1
  const long = await refit(
    [...base, '--epochs', '100', '--search', 'hyperparameters.learning_rate=log:0.0001..0.01', '--trials', '3'],
    as,
  )
  assert.equal(long.code, 0, long.stderr)
  const longSweep = JSON.parse(long.stdout)
  assert.equal(longSweep.strategy, 'random')
  assert.deepEqual(longSweep.search_space, {
    'hyperparameters.learning_rate': { min: 0.0001, max: 0.01, scale: 'log' },
  })
  const cancel = await refit(['sweeps', 'cancel', longSweep.id], as)
  assert.equal(cancel.code, 0, cancel.stderr)
  assert.equal(JSON.parse(cancel.stdout).status, 'cancelled')
  const followCancelled = await refit(['sweeps', 'follow', longSweep.id], as)
  assert.equal(followCancelled.code, 1, followCancelled.stdout)
  assert.match(followCancelled.stdout, /\[info\] Sweep cancelled/)
  assert.match(followCancelled.stdout, /^Sweep cancelled$/m)
})

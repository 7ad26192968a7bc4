// The admin dashboard in a real browser (Debian's chromium driven by playwright-core) against the real
// service (API + worker): sign in with the admin token, watch a running job's loss and accuracy curves gain
// points from the live event stream, cancel a job from its page, visit every page without a console error.
// Screenshots go to test-output/dashboard/. Without chromium the tests are skipped, except under CI=true,
// where that is a failure.
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { BrowserContext, Page } from 'playwright-core'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { projectRoot } from '../../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'

const CHROMIUM = '/usr/bin/chromium'
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]
const SHOTS = join(projectRoot, 'test-output', 'dashboard')
const haveChromium = existsSync(CHROMIUM)
const skip = haveChromium ? false : `chromium is missing (${CHROMIUM}); install it with: apt-get install -y chromium`

if (!haveChromium) {
  if (process.env.CI === 'true' || process.env.CI === '1')
    test('chromium is installed (required under CI)', () => {
      assert.fail(`${CHROMIUM} is missing: .ci/run installs it with apt-get install -y chromium`)
    })
  else console.log(`# dashboard browser tests skipped: ${skip}`)
}

let env: TestEnv
let service: RunningService
let api: ReturnType<typeof httpClient>
let context: BrowserContext
let page: Page
let profile: string
let work: string
let fileId: string
let finishedModel: string | null = null
/** console errors and uncaught exceptions on our pages */
const problems: string[] = []
/** the workers route may not exist yet on this server: its 404 is expected, not a fault of the page */
let expected404 = /\/v1\/admin\/workers/

before(async () => {
  if (!haveChromium) return
  const { chromium } = await import('playwright-core')
  env = await createTestEnv('dashboard')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-dashboard-'))
  const admin = httpClient(service.url, ADMIN_TOKEN)
  const project = await admin.post('/v1/admin/projects', { name: 'digits' })
  const key = await admin.post(`/v1/admin/projects/${project.body.id}/api_keys`, { name: 'dashboard' })
  api = httpClient(service.url, key.body.key)
  const out = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 1500, out })
  const up = await api.upload('/v1/files', await readFile(out), 'digits-1500.zip', { purpose: 'fine-tune' })
  assert.equal(up.status, 201)
  fileId = up.body.id
  await waitFor(
    async () => (await api.get(`/v1/files/${fileId}`)).body.status === 'processed',
    60_000,
    'dataset validation',
  )
  // The workers route answers 404 until the worker registry lands; once it does, no 404 is expected.
  if ((await admin.get('/v1/admin/workers')).status !== 404) expected404 = /^$/

  await mkdir(SHOTS, { recursive: true })
  profile = await mkdtemp(join(tmpdir(), 'refit-chromium-'))
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1360, height: 900 },
  })
  page = context.pages()[0] ?? (await context.newPage())
  page.setDefaultTimeout(30_000)
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return
    const where = msg.location().url
    if (/Failed to load resource/.test(msg.text()) && expected404.test(where)) return
    problems.push(`${page.url()}: ${msg.text()} (${where})`)
  })
  page.on('pageerror', (err) => problems.push(`${page.url()}: uncaught ${err.message}`))
})

after(async () => {
  await context?.close().catch(() => {})
  await service?.stop()
  await env?.cleanup()
  for (const dir of [profile, work]) if (dir) await rm(dir, { recursive: true, force: true })
})

const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true })
const statusText = () =>
  page
    .locator('#job-status')
    .textContent()
    .then((t) => t?.trim() ?? '')
const points = (chart: string) =>
  page.locator(`#${chart}`).evaluate((el) => Number((el as HTMLElement).dataset.points ?? '0'))

async function createJob(nEpochs: number) {
  const res = await api.post('/v1/fine_tuning/jobs', {
    model: 'mnist-cnn',
    training_file: fileId,
    seed: 3,
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: nEpochs, batch_size: 16 } } },
  })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  return res.body.id as string
}

test('sign in with the admin token', { skip }, async () => {
  await page.goto(`${service.url}/admin`)
  await page.locator('#token').waitFor()
  await shot('sign-in')
  await page.fill('#token', 'not-the-token')
  await page.click('#sign-in')
  await page.locator('#signin-error', { hasText: 'not the admin token' }).waitFor()
  // The refused attempt's 401 is the one console error we caused on purpose.
  const refused = problems.findIndex((p) => p.includes('401'))
  if (refused >= 0) problems.splice(refused, 1)
  await page.fill('#token', ADMIN_TOKEN)
  await page.click('#sign-in')
  await page.locator('#jobs-table').waitFor()
  const cookies = await context.cookies(service.url)
  const session = cookies.find((c) => c.name === 'refit_admin_session')
  assert.ok(session, 'session cookie set')
  assert.equal(session.httpOnly, true)
  assert.equal(session.sameSite, 'Strict')
  assert.ok(session.expires > Date.now() / 1000, 'the cookie expires')
})

test("a running job's loss and accuracy curves gain points live", { skip }, async () => {
  const jobId = await createJob(6)
  await page.goto(`${service.url}/admin#/jobs`)
  await page.locator(`tr[data-job="${jobId}"]`).waitFor()
  await page.goto(`${service.url}/admin#/jobs/${jobId}`)
  await page.locator('#loss-chart canvas').waitFor() // drawn by uPlot
  const seen: { t: number; points: number; status: string }[] = []
  let midShot = false
  await waitFor(
    async () => {
      const status = await statusText()
      const n = await points('loss-chart')
      if (!seen.length || seen.at(-1)!.points !== n) seen.push({ t: Date.now(), points: n, status })
      if (!midShot && n >= 2 && status === 'running') {
        midShot = true
        await shot('job-running')
      }
      return ['succeeded', 'failed', 'cancelled'].includes(status) && n >= 6
    },
    300_000,
    `job ${jobId} to finish with 6 points on the chart`,
  )
  console.log(`# chart points over time: ${seen.map((s) => `${s.points}@${s.status}`).join(' ')}`)
  assert.equal(await statusText(), 'succeeded')
  const counts = seen.map((s) => s.points)
  for (let i = 1; i < counts.length; i++) assert.ok(counts[i]! > counts[i - 1]!, 'points only ever grow')
  assert.ok(
    seen.filter((s) => s.status === 'running' && s.points > 0).length >= 2,
    `the curve grew while the job ran: ${JSON.stringify(seen)}`,
  )
  assert.equal(await points('loss-chart'), 6)
  assert.equal(await points('accuracy-chart'), 6)
  await page.locator('#download-model').waitFor()
  finishedModel = (await api.get(`/v1/fine_tuning/jobs/${jobId}`)).body.fine_tuned_model
  assert.equal(
    await page.locator('#download-model').getAttribute('href'),
    `/v1/admin/models/${encodeURIComponent(finishedModel!)}/content`,
  )
  await shot('job-succeeded')
})

test('cancel a running job from its page', { skip }, async () => {
  const jobId = await createJob(100)
  await page.goto(`${service.url}/admin#/jobs/${jobId}`)
  await waitFor(async () => (await statusText()) === 'running', 120_000, 'the job to run')
  page.once('dialog', (d) => void d.accept())
  await page.click('#cancel-job')
  await waitFor(async () => (await statusText()) === 'cancelled', 60_000, 'status cancelled on the page')
  assert.equal((await api.get(`/v1/fine_tuning/jobs/${jobId}`)).body.status, 'cancelled')
  assert.equal(await page.locator('#cancel-job').isDisabled(), true)
  assert.equal(await page.locator('#retry-job').isDisabled(), false)
  await shot('job-cancelled')
  await page.goto(`${service.url}/admin#/jobs`)
  await page.locator(`tr[data-job="${jobId}"][data-status="cancelled"]`).waitFor()
  await shot('jobs')
})

test('datasets, models, workers and queues pages; Bull Board', { skip }, async () => {
  await page.goto(`${service.url}/admin#/datasets`)
  await page.locator(`#files-table a[href="#/datasets/${fileId}"]`).click()
  await page.locator('#class-histogram canvas').waitFor()
  await waitFor(async () => (await page.locator('#samples img').count()) >= 5, 30_000, 'sample images')
  assert.equal(await points('class-histogram'), 5)
  const loaded = await page
    .locator('#samples img')
    .evaluateAll((imgs) => imgs.every((i) => (i as HTMLImageElement).naturalWidth === 28))
  assert.ok(loaded, 'the sample PNGs decode')
  await shot('dataset')

  await page.goto(`${service.url}/admin#/models`)
  await page.locator('#models-table tbody tr').first().waitFor()
  await shot('models')
  assert.ok(finishedModel, 'the earlier job made a model')
  await page.goto(`${service.url}/admin#/models/${encodeURIComponent(finishedModel!)}`)
  await page.locator('#lineage a[href="#/models/mnist-cnn"]').waitFor()
  await page.locator('#model-metrics').waitFor()
  await shot('model')

  await page.goto(`${service.url}/admin#/workers`)
  await page.locator('#workers table, #workers p').first().waitFor()
  await shot('workers')

  await page.goto(`${service.url}/admin#/queues`)
  await waitFor(async () => (await page.locator('#queues-table tbody tr').count()) === 3, 10_000, 'queue rows')
  await shot('queues')

  // Bull Board is a third-party page (it asks for Google Fonts, which the CSP refuses): its console is its own.
  const before = problems.length
  await page.goto(`${service.url}/admin/queues`)
  await page.getByText('training').first().waitFor()
  await shot('bull-board')
  problems.splice(before)
})

test('sign out, and no console errors on any page', { skip }, async () => {
  await page.goto(`${service.url}/admin#/jobs`)
  await page.locator('#jobs-table').waitFor()
  await page.click('#sign-out')
  await page.locator('#token').waitFor()
  const res = await page.evaluate(async () => (await fetch('/v1/admin/jobs')).status)
  assert.equal(res, 401, 'the session is gone')
  const probe = problems.findIndex((p) => p.includes('401'))
  if (probe >= 0) problems.splice(probe, 1) // the probe above, on purpose
  assert.deepEqual(problems, [])
})

// The dashboard's sweep pages in a real browser (Debian's chromium, playwright-core) against the real service:
// a small real sweep (mnist-cnn transfer on 300 digits, 4 trials of 2 epochs, ASHA on) watched on its page
// until it ends, every cell checked against the admin API, sorting, the scatters and the compared curves, the
// run table's link to it, cancel from the page, then axe at 1440 and 390 px in light and dark and the page
// weight. Without chromium the tests are skipped, except under CI=true, where that is a failure.
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import type { BrowserContext, Page } from 'playwright-core'
import { makeMnistDataset } from '../../scripts/make-mnist-dataset.js'
import { projectRoot } from '../../src/lib/paths.js'
import { chromiumMissing, launchChromium } from '../helpers/chromium.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv, waitFor } from '../helpers/env.js'
import { httpClient, type RunningService, startService } from '../helpers/service.js'

const SHOTS = join(projectRoot, 'test-output', 'dashboard')
const skip = chromiumMissing() ?? false
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js')
const LR = 'hyperparameters.learning_rate'
const UNITS = 'head.hidden_units'

let env: TestEnv
let service: RunningService
let admin: ReturnType<typeof httpClient>
let project: ReturnType<typeof httpClient>
let browser: { context: BrowserContext; close(): Promise<void> }
let page: Page
let work: string
let projectId: string
let fileId: string
let sweepId: string
const problems: string[] = []

const sweep = async (id: string) => (await admin.get(`/v1/admin/sweeps/${id}`)).body
const trials = async (id: string) => (await admin.get(`/v1/admin/sweeps/${id}/trials?limit=100`)).body.data
const createSweep = async (body: object) => {
  const res = await project.post('/v1/fine_tuning/sweeps', {
    model: 'mnist-cnn',
    training_file: fileId,
    metric: 'val_accuracy',
    goal: 'maximize',
    ...body,
  })
  assert.equal(res.status, 200, JSON.stringify(res.body))
  return res.body.id as string
}

before(async () => {
  if (skip) return
  env = await createTestEnv('dashboard_sweeps', { WORKER_CONCURRENCY: '2' })
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-dashboard-sweeps-'))
  admin = httpClient(service.url, ADMIN_TOKEN)
  projectId = (await admin.post('/v1/admin/projects', { name: 'sweeps' })).body.id
  const key = await admin.post(`/v1/admin/projects/${projectId}/api_keys`, { name: 'test' })
  assert.equal(key.status, 201, JSON.stringify(key.body))
  project = httpClient(service.url, key.body.key)
  const zip = join(work, 'digits.zip')
  await makeMnistDataset({ split: 'train', digits: [5, 6, 7, 8, 9], format: 'idx', limit: 300, out: zip })
  const up = await project.upload('/v1/files', await readFile(zip), 'digits.zip', { purpose: 'fine-tune' })
  assert.equal(up.status, 201, JSON.stringify(up.body))
  fileId = up.body.id
  await waitFor(
    async () => (await project.get(`/v1/files/${fileId}`)).body.status === 'processed',
    90_000,
    'file validation',
  )
  // random over a log range and a list: four 2-epoch trials, two at a time; ASHA judges them after epoch 1
  sweepId = await createSweep({
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 2, batch_size: 32 } } },
    search_space: { [LR]: { min: 0.0003, max: 0.03, scale: 'log' }, [UNITS]: { values: [16, 64] } },
    strategy: 'random',
    max_trials: 4,
    max_parallel: 2,
    early_termination: { type: 'asha', min_epochs: 1, reduction_factor: 2 },
    seed: 5,
  })
  await mkdir(SHOTS, { recursive: true })
  browser = await launchChromium()
  page = browser.context.pages()[0] ?? (await browser.context.newPage())
  await page.setViewportSize({ width: 1440, height: 900 })
  page.setDefaultTimeout(30_000)
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`${page.url()}: ${msg.text()}`)
  })
  page.on('pageerror', (err) => problems.push(`${page.url()}: uncaught ${err.message}`))
  await page.goto(`${service.url}/admin`)
  await page.fill('#token', ADMIN_TOKEN)
  await page.click('#sign-in')
  await page.locator('#jobs-table').waitFor()
})

after(async () => {
  await browser?.close().catch(() => {})
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

const go = async (hash: string, ready: string) => {
  await page.goto(`${service.url}/admin${hash}`)
  await page.locator(ready).first().waitFor()
}
const text = (sel: string) =>
  page
    .locator(sel)
    .first()
    .textContent()
    .then((t) => t?.trim() ?? '')
const data = (sel: string, key: string) =>
  page.locator(sel).evaluate((el, k) => (el as HTMLElement).dataset[k] ?? '', key)
const rowOrder = () =>
  page.locator('#trials-body tr').evaluateAll((trs) => trs.map((t) => Number((t as HTMLElement).dataset.trial)))
const fmt = (v: number | null) => (v === null ? '—' : Number.isInteger(v) ? String(v) : v.toFixed(4))

test('the sweep page follows a running sweep to its end: trials, statuses, best trial, scatters, curves, sorting', {
  skip,
}, async () => {
  await go(`#/sweeps/${sweepId}`, '#trials-table')
  const first = await sweep(sweepId)
  assert.equal(await text('#sweep-strategy'), 'random')
  assert.equal(await text('#sweep-metric'), 'val_accuracy, maximize')
  assert.equal(await page.locator('#search-space tr[data-path]').count(), 2)
  assert.match(await text(`#search-space tr[data-path="${LR}"]`), /range 0\.0003 … 0\.03\s*log/)
  // live: the page shows the sweep running with its trials appearing, without a reload
  let sawRunning = first.status === 'running' && (await text('#sweep-status')) === 'running'
  await waitFor(
    async () => {
      const s = await text('#sweep-status')
      if (s === 'running' && (await page.locator('#trials-body tr').count()) > 0) sawRunning = true
      return s !== 'running'
    },
    180_000,
    'the sweep to end on the page',
  )
  assert.ok(sawRunning, 'the page showed the sweep running with trials')
  const done = await sweep(sweepId)
  assert.equal(done.status, 'succeeded', JSON.stringify(done))
  assert.equal(await page.locator('#cancel-sweep').isVisible(), false, 'no cancel once ended')
  const list = await trials(sweepId)
  assert.equal(list.length, 4)
  // the page's last poll follows the one that saw the end: wait until every cell matches the API
  const expected = (t: any) =>
    [
      `#${t.trial + 1}${t.job.id === done.best_trial.job_id ? ' best' : ''}`,
      t.job.id,
      t.job.status === 'cancelled' && t.job.status_reason === 'early_terminated' ? 'early_terminated' : t.job.status,
      // one column per path, in the order the API lists the search space
      ...Object.keys(done.search_space).map((p) =>
        p === LR ? String(Number(t.values[LR].toPrecision(4))) : String(t.values[p]),
      ),
      fmt(t.metric_value),
      String(t.metrics?.final?.epoch ?? '—'),
      String(t.metrics?.best?.epoch ?? '—'),
      t.job.fine_tuned_model ?? '—',
    ].join('|')
  const cells = (id: string) =>
    page
      .locator(`#trials-body tr[data-job="${id}"] td`)
      .evaluateAll((tds) => tds.map((td) => td.textContent?.replace(/\s+/g, ' ').trim()).join('|'))
  for (const t of list) {
    let seen = ''
    await waitFor(
      async () => {
        seen = await cells(t.job.id)
        return seen === expected(t)
      },
      10_000,
      `row ${t.trial}: ${expected(t)}`,
    ).catch((err) => assert.fail(`${err.message}; the page shows ${seen}`))
  }
  console.log(`# trials: ${list.map(expected).join(' ; ')}`)
  // the event log is the sweep's stream: the API's events, newest first, ASHA's stops among them
  const events = (await admin.get(`/v1/admin/sweeps/${sweepId}/events?limit=100`)).body.data
  const logTypes = () =>
    page.locator('#sweep-log > div').evaluateAll((ds) => ds.map((d) => (d as HTMLElement).dataset.type).join(','))
  await waitFor(
    async () => (await logTypes()) === events.map((e: any) => e.type).join(','),
    10_000,
    'the event log holds the API events',
  )
  assert.equal(events[0].type, 'ended')
  assert.equal(
    events.filter((e: any) => e.type === 'early_terminated').length,
    list.filter((t: any) => t.job.status_reason === 'early_terminated').length,
  )
  assert.equal(await text('#best-model'), done.best_model)
  assert.match(await text('#best-trial'), new RegExp(`^#${done.best_trial.trial + 1} ${done.best_trial.job_id}`))
  assert.match(await text('#sweep-progress'), /4 of 4 done/)
  // default order: best metric first, trials without a metric last (in plan order)
  const scored = list.filter((t: any) => t.metric_value !== null)
  const byMetric = [...scored].sort((a: any, b: any) => b.metric_value - a.metric_value || a.trial - b.trial)
  const unscored = list.filter((t: any) => t.metric_value === null)
  assert.deepEqual(
    await rowOrder(),
    [...byMetric, ...unscored].map((t: any) => t.trial),
  )
  assert.equal(await page.locator('th[aria-sort="descending"] button[data-sort="metric"]').count(), 1)
  await page.click('button[data-sort="metric"]')
  assert.deepEqual(
    await rowOrder(),
    [...byMetric.reverse(), ...unscored].map((t: any) => t.trial),
  )
  assert.ok(page.url().includes('sort=metric') && page.url().includes('dir=asc'))
  // by a sampled value: ascending on the first click, descending on the second
  const byLr = [...list].sort((a: any, b: any) => a.values[LR] - b.values[LR]).map((t: any) => t.trial)
  await page.click(`button[data-sort="v:${LR}"]`)
  assert.deepEqual(await rowOrder(), byLr)
  await page.click(`button[data-sort="v:${LR}"]`)
  assert.deepEqual(await rowOrder(), [...byLr].reverse())
  assert.equal(await page.locator(`th[aria-sort="descending"] button[data-sort="v:${LR}"]`).count(), 1)
  // a scatter per path with a point per scored trial, the log path on a log axis, drawn on a canvas
  const scatter = (path: string) => `#scatters > [data-path="${path}"]`
  for (const path of [LR, UNITS]) {
    await waitFor(async () => Number(await data(scatter(path), 'points')) === scored.length, 5_000, `scatter ${path}`)
    assert.ok(await page.locator(`${scatter(path)} canvas`).isVisible())
  }
  assert.match(await text(`${scatter(LR)} h3`), /\(log x\)$/)
  assert.doesNotMatch(await text(`${scatter(UNITS)} h3`), /log/)
  // the data table under the scatter holds the API's values
  const lrRows = await page
    .locator(`${scatter(LR)} details tbody tr`)
    .evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent).join(' ')))
  assert.deepEqual(
    [...lrRows].sort(),
    scored.map((t: any) => `#${t.trial + 1} ${Number(t.values[LR].toPrecision(4))} ${fmt(t.metric_value)}`).sort(),
  )
  // the top trials' curves: one series per scored trial (at most 5), every epoch on the x axis
  await waitFor(async () => Number(await data('#sweep-curves', 'series')) === scored.length, 5_000, 'curve series')
  assert.equal(Number(await data('#sweep-curves', 'points')), 2, 'two epochs')
  assert.ok(await page.locator('#sweep-curves canvas').isVisible())
  const best = list.find((t: any) => t.job.id === done.best_trial.job_id)
  const rows = (await admin.get(`/v1/admin/jobs/${best.job.id}/metrics?name=val_accuracy`)).body.data
  // the data table under the chart re-renders 500 ms after it
  const curveTable = () =>
    page
      .locator('#sweep-curves details tbody tr')
      .evaluateAll((trs) => trs.map((tr) => tr.children[1]?.textContent).join(','))
  const want = rows.map((r: any) => fmt(r.value)).join(',')
  await waitFor(async () => (await curveTable()) === want, 5_000, `the best trial (first series) per epoch: ${want}`)
  await page.screenshot({ path: join(SHOTS, 'sweep.png'), fullPage: true })
  // each trial links to its job page
  await page.click(`#trials-body tr[data-job="${best.job.id}"] a[href^="#/jobs/"]`)
  await page.locator('#job-status').waitFor()
  assert.equal(await text('#job-sweep'), sweepId)
})

test('reachable from the run table and the sweeps list in the nav', { skip }, async () => {
  const [t] = await trials(sweepId)
  await go('#/jobs', `tr[data-job="${t.job.id}"]`)
  assert.equal(await text(`tr[data-job="${t.job.id}"] td[data-col="sweep"]`), sweepId)
  await page.click(`tr[data-job="${t.job.id}"] td[data-col="sweep"] a`)
  await page.locator('#trials-table').waitFor()
  assert.ok(page.url().endsWith(`#/sweeps/${sweepId}`))
  await page.click('nav a[data-page="sweeps"]')
  await page.locator(`#sweeps-body tr[data-sweep="${sweepId}"]`).waitFor()
  assert.equal(await page.locator('nav a[aria-current="page"]').textContent(), 'Sweeps')
  const s = await sweep(sweepId)
  assert.equal(await text(`tr[data-sweep="${sweepId}"] td[data-col="status"]`), s.status)
  assert.equal(await text(`tr[data-sweep="${sweepId}"] td[data-col="best"]`), fmt(s.best_trial.metric_value))
  assert.equal(await text(`tr[data-sweep="${sweepId}"] td[data-col="best-model"]`), s.best_model)
  // the status filter is the API's: no cancelled sweep yet
  await page.selectOption('select[name=status]', 'cancelled')
  await page.locator(`#sweeps-body tr[data-sweep="${sweepId}"]`).waitFor({ state: 'detached' })
  assert.ok(page.url().includes('status=cancelled'))
})

test('cancel from the page (after a confirm): the sweep and its unfinished trials end cancelled', {
  skip,
}, async () => {
  const id = await createSweep({
    method: { type: 'transfer', transfer: { hyperparameters: { n_epochs: 40 } } },
    search_space: { [UNITS]: { values: [8, 16, 32] } },
    strategy: 'grid',
    max_trials: 3,
    max_parallel: 1,
  })
  await go(`#/sweeps/${id}`, '#cancel-sweep:visible')
  await waitFor(async () => (await trials(id)).length > 0, 60_000, 'a first trial')
  // dismissing the confirm keeps it running
  page.once('dialog', (d) => d.dismiss())
  await page.click('#cancel-sweep')
  await page.waitForTimeout(300)
  assert.equal((await sweep(id)).status, 'running')
  page.once('dialog', (d) => d.accept())
  await page.click('#cancel-sweep')
  await waitFor(async () => (await text('#sweep-status')) === 'cancelled', 30_000, 'the page shows cancelled')
  assert.equal((await sweep(id)).status, 'cancelled')
  assert.equal(await page.locator('#cancel-sweep').isVisible(), false)
  await waitFor(
    async () => (await trials(id)).every((t: any) => ['succeeded', 'failed', 'cancelled'].includes(t.job.status)),
    60_000,
    'every trial ended',
  )
})

test('sweep pages at 1440 and 390 px, light and dark: no axe violation, no sideways scroll; page weight', {
  skip,
}, async () => {
  const pages: [string, string, string][] = [
    ['sweeps', '#/sweeps', '#sweeps-body tr'],
    ['sweep', `#/sweeps/${sweepId}`, '#scatters canvas'],
  ]
  const axe = await readFile(AXE, 'utf8')
  const failures: string[] = []
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme })
    for (const width of [1440, 390]) {
      await page.setViewportSize({ width, height: width > 400 ? 900 : 844 })
      for (const [name, hash, ready] of pages) {
        await go(hash, ready)
        // the sweep page renders its trials after the first poll: check the full page
        if (name === 'sweep') await page.locator('#trials-body tr').first().waitFor()
        const overflow = await page.evaluate(
          () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
        )
        if (width === 390 && overflow > 0) failures.push(`${name} ${scheme} ${width}: ${overflow}px sideways scroll`)
        await page.evaluate(axe)
        const violations = (await page.evaluate(async () => {
          const r = await (
            window as unknown as { axe: { run(o: object): Promise<{ violations: unknown[] }> } }
          ).axe.run({ resultTypes: ['violations'] })
          return r.violations
        })) as { id: string; nodes: { target: string[] }[] }[]
        for (const v of violations)
          failures.push(
            `${name} ${scheme} ${width}: ${v.id} at ${v.nodes
              .map((n) => n.target.join(' '))
              .slice(0, 3)
              .join(', ')}`,
          )
        await page.screenshot({ path: join(SHOTS, `${name}-${width}-${scheme}.png`), fullPage: true })
      }
    }
  }
  await page.emulateMedia({ colorScheme: 'light' })
  await page.setViewportSize({ width: 1440, height: 900 })
  assert.deepEqual(failures, [])
  // page weight and first paint, opening the sweep page cold
  await page.goto('about:blank')
  await page.goto(`${service.url}/admin#/sweeps/${sweepId}`)
  await page.locator('#scatters canvas').first().waitFor()
  const bytes = await page.evaluate(() =>
    (performance.getEntriesByType('resource') as PerformanceResourceTiming[])
      .filter((r) => r.name.includes('/admin/assets/'))
      .reduce((s, r) => s + r.decodedBodySize, 0),
  )
  const html = (await (await fetch(`${service.url}/admin`)).text()).length
  const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1)
  console.log(
    `# sweep page weight from our origin: ${Math.round((bytes + html) / 1024)} KB (uncompressed); first contentful paint ${Math.round(fcp)} ms`,
  )
  assert.ok(bytes + html < 250 * 1024, `${bytes + html} bytes`)
  assert.deepEqual(problems, [])
})

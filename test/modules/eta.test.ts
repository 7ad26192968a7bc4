// The estimated finish of a running job: measured from training's own pace, not from the job's start.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { EtaEstimator } from '../../src/modules/jobs/eta.js'

test('set-up time before the first report does not inflate the first estimate', () => {
  // 30 s of set-up, then 1% per second: the job ends 100 s after training starts
  const eta = new EtaEstimator()
  const t0 = 1_000_000_000
  const start = t0 + 30_000
  assert.equal(eta.update(start, 0.0), null, 'no estimate from one report')
  assert.equal(eta.update(start + 1000, 0.01), null, 'nor during the warm-up')
  const first = eta.update(start + 3000, 0.03)
  assert.equal(first, Math.round((start + 100_000) / 1000))
  // the old formula (elapsed since the job started / fraction) said 30+3 s for 3%: 1100 s in all
  for (let s = 4; s <= 50; s++) {
    const est = eta.update(start + s * 1000, s / 100)!
    assert.ok(Math.abs(est - (start + 100_000) / 1000) <= 1, `second ${s}: ${est}`)
  }
})

test('a change of pace moves the estimate smoothly, and a new attempt measures afresh', () => {
  const eta = new EtaEstimator()
  const start = 2_000_000_000
  for (let s = 0; s <= 10; s++) eta.update(start + s * 1000, s / 100)
  // the pace halves: the estimate lengthens over several reports, not in one jump
  const estimates: number[] = []
  for (let s = 11; s <= 40; s++) estimates.push(eta.update(start + s * 1000, 0.1 + (s - 10) / 200)!)
  for (let i = 1; i < estimates.length; i++) assert.ok(estimates[i]! >= estimates[i - 1]! - 1)
  const finalPace = start / 1000 + 40 + (1 - 0.25) / 0.005
  assert.ok(Math.abs(estimates.at(-1)! - finalPace) < 0.1 * (finalPace - start / 1000 - 40), `${estimates.at(-1)}`)
  assert.equal(eta.update(start + 41_000, 0.05), null, 'progress went back: a resumed attempt starts over')
})

// Runs a sweep: creates its next trials (normal fine-tuning jobs) while fewer than max_parallel are
// unfinished, ranks the finished ones, and ends the sweep when every trial has ended.
//
// Who calls it: the worker, in two places. (1) A lifecycle `onTransition` listener in the worker process,
// when a trial's job ends there: the next trial starts at once. (2) The once-per-cluster reconcile pass
// (workers/worker.ts), for every running sweep. The reconcile pass is the one that survives a crash: a
// worker that dies after a trial ended but before the listener created the next one loses nothing, since
// the next pass re-derives everything from the rows (the trials created, which have ended) and tops the
// sweep up. It is also how a trial that waited for a free project slot (max_concurrent_jobs) gets created.
// Two callers at once take turns on a Redis lease per sweep, and (sweep_id, sweep_trial) is unique, so a
// trial is never created twice and max_parallel is never exceeded.
import { randomUUID } from 'node:crypto'
import { AppError } from '../../errors.js'
import type { FineTuningJob, Sweep } from '../../generated/prisma/client.js'
import { LookupCache, lookupEpochKey } from '../../plugins/lookup-cache.js'
import type { CreateSweepBody } from '../../schemas/sweeps.js'
import { addJobEvent } from '../jobs/job-events.js'
import { notifyJobChanged } from '../jobs/job-updates.js'
import { createJob, type JobServiceDeps } from '../jobs/jobs-service.js'
import * as lifecycle from '../jobs/lifecycle/lifecycle.js'
import type { MetricsSummary } from '../jobs/lifecycle/metrics-summary.js'
import { isTerminal } from '../jobs/lifecycle/transitions.js'
import { SLOT_HOLDING } from '../limits/limits-service.js'
import { deleteModel, type ModelDeleteDeps } from '../models/models-service.js'
import { type AshaSpec, applyAsha } from './asha.js'
import { addSweepEvent, sweepEventKeys } from './sweep-events.js'
import { type TrialValues, trialBody } from './sweep-plan.js'

/** What a sweep stores besides its request: the seed it resolved. */
export type SweepSpec = Omit<CreateSweepBody, 'early_termination' | 'baseline_trial'> & {
  seed: number
  early_termination: AshaSpec | null
  /** as requested or defaulted (absent on sweeps created before it existed) */
  baseline_trial?: boolean
  /** trial 0's values when it runs a lone job's defaults, else null */
  baseline?: TrialValues | null
}

const LEASE_MS = 60_000
const UNLOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

/**
 * Runs `fn` holding the sweep's lease; `waitMs` 0: returns null at once when another caller holds it (it
 * does the same work). A holder that dies frees it after LEASE_MS.
 */
export async function withSweepLease<T>(
  deps: Pick<JobServiceDeps, 'redis' | 'config'>,
  sweepId: string,
  fn: () => Promise<T>,
  waitMs = 0,
): Promise<T | null> {
  const key = `${deps.config.queuePrefix}:locks:sweep:${sweepId}`
  const token = randomUUID()
  const deadline = Date.now() + waitMs
  while ((await deps.redis.set(key, token, 'PX', LEASE_MS, 'NX')) !== 'OK') {
    if (Date.now() >= deadline) return null
    await new Promise((r) => setTimeout(r, 50))
  }
  try {
    return await fn()
  } finally {
    await deps.redis.eval(UNLOCK, 1, key, token).catch(() => {})
  }
}

type TrialRow = Pick<
  FineTuningJob,
  'id' | 'status' | 'sweepTrial' | 'sweepValues' | 'fineTunedModelId' | 'hyperparameters' | 'statusReason'
>
const TRIAL_SELECT = {
  id: true,
  status: true,
  sweepTrial: true,
  sweepValues: true,
  fineTunedModelId: true,
  hyperparameters: true,
  statusReason: true,
} as const

/**
 * The sweep metric of each succeeded trial, read from the summary its success stored in its model (one
 * definition of best/final: jobs/lifecycle/metrics-summary.ts): the row of the epoch whose weights the model
 * holds (`delivered_epoch`: the early-stopping best, else the final epoch).
 */
export async function trialMetrics(
  deps: Pick<JobServiceDeps, 'db'>,
  metric: string,
  trials: Pick<TrialRow, 'id' | 'status'>[],
): Promise<Map<string, number>> {
  const ids = trials.filter((t) => t.status === 'succeeded').map((t) => t.id)
  const out = new Map<string, number>()
  if (!ids.length) return out
  const models = await deps.db.model.findMany({
    where: { jobId: { in: ids } },
    select: { jobId: true, metadata: true },
  })
  for (const m of models) {
    const summary = (m.metadata as { metrics?: MetricsSummary } | null)?.metrics
    if (!summary) continue
    const row = summary.best_by?.rule === 'early_stopping' ? summary.best : summary.final
    const v = row?.[metric]
    if (typeof v === 'number' && Number.isFinite(v) && m.jobId) out.set(m.jobId, v)
  }
  return out
}

/** The best trial by the sweep's metric and goal; ties go to the earlier trial. */
export function pickBest<T extends Pick<TrialRow, 'id' | 'sweepTrial'>>(
  sweep: Pick<Sweep, 'spec'>,
  trials: T[],
  values: Map<string, number>,
) {
  const spec = sweep.spec as unknown as SweepSpec
  let best: { trial: T; value: number } | null = null
  for (const t of [...trials].sort((a, b) => (a.sweepTrial ?? 0) - (b.sweepTrial ?? 0))) {
    const v = values.get(t.id)
    if (v === undefined) continue
    if (!best || (spec.goal === 'maximize' ? v > best.value : v < best.value)) best = { trial: t, value: v }
  }
  return best
}

/**
 * One pass over a sweep (see the top of this file). When another caller holds the lease, it leaves a mark
 * that makes the holder run one more pass once it is done (what it read may predate this caller's news:
 * a trial that just ended), so no wake-up waits for the reconcile pass. Returns false when it left the mark.
 */
export async function advanceSweep(deps: JobServiceDeps, sweepId: string, waitMs = 0): Promise<boolean> {
  const again = `${deps.config.queuePrefix}:sweep-again:${sweepId}`
  let ran = false
  for (let round = 0; round < 10; round++) {
    let done = await withSweepLease(deps, sweepId, () => sweepPass(deps, sweepId), waitMs)
    if (done === null) {
      await deps.redis.set(again, '1', 'PX', LEASE_MS)
      // the holder may have finished in between (and looked for the mark before it was set): try once more
      done = await withSweepLease(deps, sweepId, () => sweepPass(deps, sweepId))
      if (done === null) return ran
    }
    ran = true
    if (!(await deps.redis.getdel(again))) return true
  }
  return ran
}

/**
 * Whether some trial of a transfer sweep is past its backbone features: its features stored in the cache
 * across jobs (the `features cached` event, or its `not cached` twin), read from it, or an epoch trained.
 * Until then only one trial runs, so the others find the features cached and the sweep extracts them once
 * (trials started together would each compute them). A trial that ended without getting there opens
 * nothing: the next one takes its turn.
 */
async function pastFeatures(deps: JobServiceDeps, trials: TrialRow[]) {
  if (trials.some((t) => t.status === 'succeeded')) return true
  if (!trials.length) return false
  const hit = await deps.db.jobEvent.findFirst({
    where: {
      jobId: { in: trials.map((t) => t.id) },
      OR: [
        { type: 'metrics' },
        { data: { path: ['which'], equals: 'training' } },
        { message: { startsWith: 'features from cache' } },
      ],
    },
    select: { id: true },
  })
  return hit !== null
}

/** Where the project's job slots stand for this sweep's next trials (README: Scheduling). */
async function freeSlots(deps: JobServiceDeps, projectId: string, sweepId: string) {
  const project = await deps.db.project.findUnique({ where: { id: projectId }, select: { maxConcurrentJobs: true } })
  const max = project?.maxConcurrentJobs ?? deps.config.maxConcurrentJobs
  const holding = { projectId, status: { in: [...SLOT_HOLDING] } }
  const [unfinished, others] = await Promise.all([
    deps.db.fineTuningJob.count({ where: holding }),
    deps.db.fineTuningJob.count({ where: { ...holding, OR: [{ sweepId: null }, { sweepId: { not: sweepId } }] } }),
  ])
  // the project has other work under way: one of its slots stays free for what it submits next
  return max - unfinished - (others > 0 ? 1 : 0)
}

async function sweepPass(deps: JobServiceDeps, sweepId: string) {
  const sweep = await deps.db.sweep.findUnique({ where: { id: sweepId } })
  if (!sweep || sweep.settledAt) return true
  const spec = sweep.spec as unknown as SweepSpec
  const plan = sweep.plan as TrialValues[]
  const trials: TrialRow[] = await deps.db.fineTuningJob.findMany({ where: { sweepId }, select: TRIAL_SELECT })
  if (sweep.status !== 'running') {
    // cancelled: its trials are being cancelled; once they have all ended, the losers go and it settles
    await reportTrialEnds(deps, sweep, trials, await trialMetrics(deps, spec.metric, trials))
    if (trials.every((t) => isTerminal(t.status))) await finish(deps, sweep, trials)
    return true
  }
  if (spec.early_termination)
    await applyAsha(
      deps,
      {
        id: sweepId,
        metric: spec.metric,
        goal: spec.goal,
        asha: spec.early_termination,
        protectedTrial: spec.baseline ? 0 : null,
      },
      trials,
    )
  const values = await trialMetrics(deps, spec.metric, trials)
  await reportTrialEnds(deps, sweep, trials, values)
  const best = pickBest(sweep, trials, values)
  if (best && best.trial.id !== sweep.bestJobId) {
    await addSweepEvent(
      deps,
      sweepId,
      `best_changed:${best.trial.id}`,
      'best_changed',
      `Trial ${(best.trial.sweepTrial ?? 0) + 1} is the best so far: ${spec.metric} ${best.value}`,
      {
        trial: best.trial.sweepTrial,
        job_id: best.trial.id,
        values: best.trial.sweepValues,
        metric: spec.metric,
        metric_value: best.value,
        previous_job_id: sweep.bestJobId,
      },
    )
    await deps.db.sweep.updateMany({ where: { id: sweepId, status: 'running' }, data: { bestJobId: best.trial.id } })
  }
  const created = new Set(trials.map((t) => t.sweepTrial))
  let unfinished = trials.filter((t) => !isTerminal(t.status)).length
  const parallel =
    spec.method.type === 'transfer' && spec.max_parallel > 1 && created.size < plan.length
      ? (await pastFeatures(deps, trials))
        ? spec.max_parallel
        : 1
      : spec.max_parallel
  let free = created.size < plan.length && unfinished < parallel ? await freeSlots(deps, sweep.projectId, sweepId) : 0
  for (let i = 0; i < plan.length && unfinished < parallel && free > 0; i++) {
    if (created.has(i)) continue
    try {
      const job = await createJob(deps, sweep.projectId, trialBody(spec, plan[i]!, spec.seed), {
        sweep: { id: sweepId, trial: i, values: plan[i]! },
      })
      trials.push(job)
      created.add(i)
      unfinished++
      free--
      await addSweepEvent(
        deps,
        sweepId,
        `trial_started:${i}`,
        'trial_started',
        `Trial ${i + 1} of ${plan.length} started as job ${job.id}`,
        { trial: i, job_id: job.id, values: plan[i]! },
      )
    } catch (err) {
      // no free slot in the project (max_concurrent_jobs): the trial waits for the next pass
      if (err instanceof AppError && (err.code === 'too_many_jobs' || err.code === 'service_unavailable')) break
      // Checked at creation, so only a change since (the training file deleted, say) lands here: the
      // trial cannot be created now or later, so the sweep fails once its running trials have ended.
      if (err instanceof AppError) {
        deps.log.warn({ sweepId, trial: i, code: err.code, err: err.message }, 'sweep trial could not be created')
        if (unfinished === 0) await finish(deps, sweep, trials, `trial ${i + 1} could not be created: ${err.message}`)
        return true
      }
      throw err
    }
  }
  if (created.size === plan.length && unfinished === 0) await finish(deps, sweep, trials)
  return true
}

/** A trial_ended event for each trial that has ended since the last pass said so. */
async function reportTrialEnds(deps: JobServiceDeps, sweep: Sweep, trials: TrialRow[], values: Map<string, number>) {
  const ended = trials.filter((t) => isTerminal(t.status))
  if (!ended.length) return
  const spec = sweep.spec as unknown as SweepSpec
  const said = await sweepEventKeys(deps.db, sweep.id, ['trial_ended'])
  for (const t of ended.sort((a, b) => (a.sweepTrial ?? 0) - (b.sweepTrial ?? 0))) {
    const key = `trial_ended:${t.sweepTrial}`
    if (said.has(key)) continue
    const value = values.get(t.id) ?? null
    await addSweepEvent(
      deps,
      sweep.id,
      key,
      'trial_ended',
      `Trial ${(t.sweepTrial ?? 0) + 1} ${t.status}${t.statusReason ? ` (${t.statusReason})` : ''}${value !== null ? `: ${spec.metric} ${value}` : ''}`,
      {
        trial: t.sweepTrial,
        job_id: t.id,
        status: t.status,
        status_reason: t.statusReason,
        metric: spec.metric,
        metric_value: value,
      },
      t.status === 'failed' ? 'warn' : 'info',
    )
  }
}

/**
 * The sweep's end, under its lease: the losers pruned (keep_all_models false), the `ended` event, then the
 * row (status unless a cancel set it, best, settled_at). The event goes before the row, so a stream that sees
 * the sweep settled has the event to read; a pass that dies half way is redone by the next one (the event is
 * written once, by its key).
 */
async function finish(deps: JobServiceDeps, sweep: Sweep, trials: TrialRow[], reason?: string) {
  const spec = sweep.spec as unknown as SweepSpec
  const values = await trialMetrics(deps, spec.metric, trials)
  const best = pickBest(sweep, trials, values)
  const succeeded = trials.filter((t) => t.status === 'succeeded').length
  const cancelled = sweep.status === 'cancelled'
  const status = cancelled ? 'cancelled' : succeeded && !reason ? 'succeeded' : 'failed'
  const statusReason = cancelled ? sweep.statusReason : (reason ?? (succeeded ? null : 'no trial succeeded'))
  const pruned = spec.keep_all_models ? 0 : await pruneLosers(deps, sweep.projectId, trials, best?.trial.id)
  await reportTrialEnds(deps, sweep, trials, values)
  const bestModel = best?.trial.fineTunedModelId ?? null
  await addSweepEvent(
    deps,
    sweep.id,
    'ended',
    'ended',
    `Sweep ${status}${statusReason ? ` (${statusReason})` : ''}: ${succeeded} of ${plan(sweep)} trials succeeded${best ? `, the best is trial ${(best.trial.sweepTrial ?? 0) + 1} (${spec.metric} ${best.value})` : ''}`,
    {
      status,
      status_reason: statusReason,
      trials_succeeded: succeeded,
      best_job_id: best?.trial.id ?? null,
      best_model: bestModel,
      metric_value: best?.value ?? null,
      models_pruned: pruned,
    },
    status === 'failed' ? 'warn' : 'info',
  )
  // under the lease no cancel commits meanwhile; a cancelled sweep keeps its own finished_at
  await deps.db.sweep.update({
    where: { id: sweep.id },
    data: {
      status,
      statusReason,
      bestJobId: best?.trial.id ?? null,
      ...(cancelled ? {} : { finishedAt: new Date() }),
      settledAt: new Date(),
    },
  })
  notifyJobChanged(deps.redis, deps.config.queuePrefix, sweep.id)
}

const plan = (sweep: Sweep) => (sweep.plan as unknown[]).length

/**
 * keep_all_models false: every trial but the best loses its model (deleted as DELETE /v1/models/{id} does)
 * and its checkpoints (rows, artifacts and stored bytes); its job's fine_tuned_model becomes null, and an
 * event on the job says so.
 */
async function pruneLosers(
  deps: JobServiceDeps,
  projectId: string,
  trials: TrialRow[],
  bestId: string | undefined,
): Promise<number> {
  let count = 0
  const models: ModelDeleteDeps = {
    db: deps.db,
    storage: deps.storage,
    lookups: new LookupCache(deps.redis, lookupEpochKey(deps.config.queuePrefix)),
  }
  for (const t of trials) {
    if (t.id === bestId) continue
    const deleted: Record<string, unknown> = {}
    if (t.fineTunedModelId) {
      try {
        await deleteModel(models, projectId, t.fineTunedModelId)
        deleted.model = t.fineTunedModelId
      } catch (err) {
        // in use meanwhile (a job fine-tuning from it, an evaluation): it stays, and the event says why
        if (!(err instanceof AppError)) throw err
        await addJobEvent(deps.db, t.id, 'warn', `The sweep kept this trial's model: ${err.message}`, {
          model: t.fineTunedModelId,
          code: err.code,
        })
      }
      if (deleted.model) {
        await lifecycle.forgetModel(deps, t.id, t.fineTunedModelId)
        count++
      }
    }
    const checkpoints = await deps.db.checkpoint.findMany({ where: { jobId: t.id }, include: { artifact: true } })
    if (checkpoints.length) {
      await deps.db.checkpoint.deleteMany({ where: { jobId: t.id } })
      await deps.db.artifact.deleteMany({ where: { id: { in: checkpoints.map((c) => c.artifactId) } } })
      for (const c of checkpoints) await deps.storage.remove(c.artifact.path).catch(() => {})
      deleted.checkpoints = checkpoints.length
    }
    if (Object.keys(deleted).length)
      await addJobEvent(
        deps.db,
        t.id,
        'info',
        `Not the sweep's best trial (keep_all_models is false): ${deleted.model ? `model ${deleted.model}` : 'no model'} and ${checkpoints.length} checkpoint(s) deleted`,
        { sweep_pruned: true, model: deleted.model ?? null, checkpoints: checkpoints.length },
      )
  }
  return count
}

/**
 * The reconcile pass's share: every running sweep, topped up and ended when its trials have, and every
 * cancelled one not yet settled (pruned once its trials have ended).
 */
export async function advanceRunningSweeps(deps: JobServiceDeps): Promise<number> {
  const running = await deps.db.sweep.findMany({ where: { settledAt: null }, select: { id: true }, take: 500 })
  for (const s of running) await advanceSweep(deps, s.id)
  return running.length
}

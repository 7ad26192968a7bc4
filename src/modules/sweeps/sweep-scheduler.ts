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
import { createJob, type JobServiceDeps } from '../jobs/jobs-service.js'
import * as lifecycle from '../jobs/lifecycle/lifecycle.js'
import type { MetricsSummary } from '../jobs/lifecycle/metrics-summary.js'
import { isTerminal } from '../jobs/lifecycle/transitions.js'
import { deleteModel, type ModelDeleteDeps } from '../models/models-service.js'
import { type AshaSpec, applyAsha } from './asha.js'
import { type TrialValues, trialBody } from './sweep-plan.js'

/** What a sweep stores besides its request: the seed it resolved. */
export type SweepSpec = Omit<CreateSweepBody, 'early_termination'> & {
  seed: number
  early_termination: AshaSpec | null
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

/** One pass over a sweep (see the top of this file); returns false when another caller held the lease. */
export async function advanceSweep(deps: JobServiceDeps, sweepId: string, waitMs = 0): Promise<boolean> {
  const done = await withSweepLease(
    deps,
    sweepId,
    async () => {
      const sweep = await deps.db.sweep.findUnique({ where: { id: sweepId } })
      if (sweep?.status !== 'running') return true
      const spec = sweep.spec as unknown as SweepSpec
      const plan = sweep.plan as TrialValues[]
      const trials: TrialRow[] = await deps.db.fineTuningJob.findMany({ where: { sweepId }, select: TRIAL_SELECT })
      if (spec.early_termination)
        await applyAsha(
          deps,
          { id: sweepId, metric: spec.metric, goal: spec.goal, asha: spec.early_termination },
          trials,
        )
      const created = new Set(trials.map((t) => t.sweepTrial))
      let unfinished = trials.filter((t) => !isTerminal(t.status)).length
      for (let i = 0; i < plan.length && unfinished < spec.max_parallel; i++) {
        if (created.has(i)) continue
        try {
          const job = await createJob(deps, sweep.projectId, trialBody(spec, plan[i]!, spec.seed), {
            sweep: { id: sweepId, trial: i, values: plan[i]! },
          })
          trials.push(job)
          created.add(i)
          unfinished++
        } catch (err) {
          // no free slot in the project (max_concurrent_jobs): the trial waits for the next pass
          if (err instanceof AppError && (err.code === 'too_many_jobs' || err.code === 'service_unavailable')) break
          // Checked at creation, so only a change since (the training file deleted, say) lands here: the
          // trial cannot be created now or later, so the sweep fails once its running trials have ended.
          if (err instanceof AppError) {
            deps.log.warn({ sweepId, trial: i, code: err.code, err: err.message }, 'sweep trial could not be created')
            if (unfinished === 0)
              await finish(deps, sweep, trials, `trial ${i + 1} could not be created: ${err.message}`)
            return true
          }
          throw err
        }
      }
      if (created.size === plan.length && unfinished === 0) await finish(deps, sweep, trials)
      else {
        const best = pickBest(sweep, trials, await trialMetrics(deps, spec.metric, trials))
        if (best && best.trial.id !== sweep.bestJobId)
          await deps.db.sweep.updateMany({
            where: { id: sweepId, status: 'running' },
            data: { bestJobId: best.trial.id },
          })
      }
      return true
    },
    waitMs,
  )
  return done !== null
}

async function finish(deps: JobServiceDeps, sweep: Sweep, trials: TrialRow[], reason?: string) {
  const spec = sweep.spec as unknown as SweepSpec
  const best = pickBest(sweep, trials, await trialMetrics(deps, spec.metric, trials))
  const succeeded = trials.some((t) => t.status === 'succeeded')
  // Before the sweep shows as ended, so a client that sees `succeeded` sees only the best model left. Under
  // the lease, so no cancel commits meanwhile; a pass that dies half way is redone by the next one.
  if (!spec.keep_all_models) await pruneLosers(deps, sweep.projectId, trials, best?.trial.id)
  // guarded on `running`: a cancel that committed first wins
  await deps.db.sweep.updateMany({
    where: { id: sweep.id, status: 'running' },
    data: {
      status: succeeded && !reason ? 'succeeded' : 'failed',
      statusReason: reason ?? (succeeded ? null : 'no trial succeeded'),
      bestJobId: best?.trial.id ?? null,
      finishedAt: new Date(),
    },
  })
}

/**
 * keep_all_models false: every trial but the best loses its model (deleted as DELETE /v1/models/{id} does)
 * and its checkpoints (rows, artifacts and stored bytes); its job's fine_tuned_model becomes null, and an
 * event on the job says so.
 */
async function pruneLosers(deps: JobServiceDeps, projectId: string, trials: TrialRow[], bestId: string | undefined) {
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
      if (deleted.model) await lifecycle.forgetModel(deps, t.id, t.fineTunedModelId)
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
}

/** The reconcile pass's share: every running sweep, topped up and ended when its trials have. */
export async function advanceRunningSweeps(deps: JobServiceDeps): Promise<number> {
  const running = await deps.db.sweep.findMany({ where: { status: 'running' }, select: { id: true }, take: 500 })
  for (const s of running) await advanceSweep(deps, s.id)
  return running.length
}

// Sweeps as the API sees them: creation (every trial checked as a job up front, nothing written until all
// pass), reads, and cancel. Running a sweep is sweep-scheduler.ts's (in the worker).
import type { FastifyInstance } from 'fastify'
import { AppError, notFound } from '../../errors.js'
import type { FineTuningJob, Sweep } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import type { CreateJobBody } from '../../schemas/jobs.js'
import type { CreateSweepBody, SweepObject } from '../../schemas/sweeps.js'
import { cancelJob, type JobServiceDeps, presentJob, resolveJob } from '../jobs/jobs-service.js'
import { isTerminal } from '../jobs/lifecycle/transitions.js'
import { addSweepEvent } from './sweep-events.js'
import {
  baselineValues,
  checkSearchSpace,
  checkTrialSchema,
  planTrials,
  rangeEnds,
  type TrialValues,
  trialBody,
} from './sweep-plan.js'
import { advanceSweep, type SweepSpec, trialMetrics, withSweepLease } from './sweep-scheduler.js'

/** Checks the whole sweep, then writes it; the worker creates its trials (sweep-scheduler.ts). */
export async function createSweep(app: FastifyInstance, projectId: string, body: CreateSweepBody) {
  checkSearchSpace(body, app.config.maxSweepTrials)
  const seed = body.seed ?? Math.floor(Math.random() * 2 ** 31)
  const baselineTrial = body.baseline_trial ?? body.strategy === 'random'
  if (baselineTrial && body.strategy === 'grid')
    throw new AppError(
      'invalid_baseline_trial',
      'baseline_trial is for random sweeps: a grid tries exactly its combinations; put the defaults among the values instead.',
      { param: 'baseline_trial' },
    )
  const baseline = baselineTrial ? await findBaseline(app, projectId, body, seed) : null
  const plan = planTrials(body, seed, baseline && 'values' in baseline ? baseline.values : null)
  checkEarlyTermination(body)
  await checkTrials(app, projectId, body, plan, seed)
  const spec: SweepSpec = {
    ...body,
    seed,
    early_termination: body.early_termination ?? null,
    keep_all_models: body.keep_all_models ?? false,
    baseline_trial: baselineTrial,
    baseline: baseline && 'values' in baseline ? baseline.values : null,
  }
  const sweep = await app.db.sweep.create({
    data: { id: newId('sweep'), projectId, spec: spec as object, plan: plan as object[] },
  })
  await addSweepEvent(
    app,
    sweep.id,
    'created',
    'created',
    `Created ${spec.strategy} sweep ${sweep.id}: ${plan.length} trial(s), at most ${spec.max_parallel} at once, ranked by ${spec.metric} (${spec.goal})${
      spec.baseline
        ? "; trial 1 runs a lone job's defaults"
        : baseline && 'reason' in baseline
          ? `; no baseline trial: ${baseline.reason}`
          : ''
    }`,
    {
      trials_total: plan.length,
      strategy: spec.strategy,
      max_parallel: spec.max_parallel,
      seed,
      baseline: spec.baseline,
      ...(baseline && 'reason' in baseline ? { baseline_reason: baseline.reason } : {}),
    },
  )
  // the first trials start now rather than at the workers' next reconcile pass (which retries if this fails)
  await advanceSweep(app, sweep.id).catch((err) =>
    app.log.warn(
      { err: (err as Error).message, sweepId: sweep.id },
      'first sweep pass failed; the reconcile pass retries',
    ),
  )
  return presentSweep(app, await app.db.sweep.findUniqueOrThrow({ where: { id: sweep.id } }))
}

/**
 * The baseline trial's values (a lone job's settings at each search-space path) or why there is none. The lone
 * job is resolved by the job routes' own code (resolveJob), so its defaults are exactly a plain job's; a lone
 * job those routes would refuse has no baseline either.
 */
async function findBaseline(app: JobServiceDeps, projectId: string, body: CreateSweepBody, seed: number) {
  try {
    const { data } = await resolveJob(app, projectId, trialBody(body, {}, seed))
    return baselineValues(body, {
      method: data.method as Record<string, unknown>,
      hyperparameters: data.hyperparameters as Record<string, unknown>,
    })
  } catch (err) {
    // the sweep's own checks (checkTrials) name what is wrong with the request
    if (err instanceof AppError) return { reason: `a lone job with the defaults would be refused: ${err.message}` }
    throw err
  }
}

/** ASHA's fields: a first rung of at least one epoch and a factor of at least 2 (each trial's n_epochs: checkTrials). */
function checkEarlyTermination(body: CreateSweepBody) {
  const asha = body.early_termination
  if (!asha) return
  if (asha.min_epochs < 1)
    throw new AppError(
      'invalid_early_termination',
      `early_termination.min_epochs must be >= 1, got ${asha.min_epochs}.`,
      {
        param: 'early_termination.min_epochs',
      },
    )
  if (asha.reduction_factor < 2)
    throw new AppError(
      'invalid_early_termination',
      `early_termination.reduction_factor must be >= 2 (the top 1/reduction_factor of a rung go on), got ${asha.reduction_factor}.`,
      { param: 'early_termination.reduction_factor' },
    )
}

/** The smallest n_epochs "auto" resolves to (hyperparameters.ts): the bound while the files are being validated. */
const SMALLEST_AUTO_EPOCHS = 5

/**
 * ASHA's first rung must come before the trial's last epoch, or no trial is ever compared: `n_epochs` as the
 * job resolved it ("auto" from the training set's size), or, while the files are still being validated, the
 * smallest value "auto" can give.
 */
function checkRungs(body: CreateSweepBody, values: TrialValues, nEpochs: unknown) {
  const asha = body.early_termination
  if (!asha) return
  const auto = typeof nEpochs !== 'number'
  const n = auto ? SMALLEST_AUTO_EPOCHS : nEpochs
  if (asha.min_epochs < n) return
  const what = Object.keys(values).length ? ` (${JSON.stringify(values)})` : ''
  throw new AppError(
    'invalid_early_termination',
    auto
      ? `early_termination.min_epochs (${asha.min_epochs}) must be below the trials' n_epochs, but a trial${what} has n_epochs "auto", which may resolve to ${SMALLEST_AUTO_EPOCHS} (the training file is still being validated): lower min_epochs or set n_epochs.`
      : `early_termination.min_epochs (${asha.min_epochs}) must be below the trials' n_epochs, but a trial${what} runs ${n}${hasExplicitEpochs(body, values) ? '' : ' (n_epochs "auto", resolved from the training set size)'}: no rung would ever be reached.`,
    { param: 'early_termination.min_epochs' },
  )
}

const hasExplicitEpochs = (body: CreateSweepBody, values: TrialValues) =>
  'hyperparameters.n_epochs' in values ||
  typeof (body.method as Record<string, { hyperparameters?: { n_epochs?: unknown } }>)[body.method.type]
    ?.hyperparameters?.n_epochs === 'number'

/**
 * Every trial (and each range's ends) must be a job the job routes would accept, checked by the same code
 * (the schema, then resolveJob: model, files, method, bounds, memory), before anything is created.
 */
async function checkTrials(
  app: JobServiceDeps,
  projectId: string,
  body: CreateSweepBody,
  plan: TrialValues[],
  seed: number,
) {
  const seen = new Set<string>()
  for (const values of [...plan, ...rangeEnds(body, plan[0] ?? {})]) {
    const job: CreateJobBody = trialBody(body, values, seed)
    const key = JSON.stringify(job)
    if (seen.has(key)) continue
    seen.add(key)
    checkTrialSchema(body, values, job)
    if (body.metric.startsWith('val_') && !body.validation_file) {
      const config = (job.method as Record<string, { hyperparameters?: { validation_split?: unknown } }>)[
        body.method.type
      ]
      if (config?.hyperparameters?.validation_split === 0)
        throw new AppError(
          'sweep_metric_unavailable',
          `metric ${body.metric} needs validation data, but a trial has no validation_file and validation_split 0: give a validation_file, a validation_split above 0, or rank by ${body.metric.slice(4)}.`,
          { param: 'metric' },
        )
    }
    try {
      const { data } = await resolveJob(app, projectId, job)
      checkRungs(body, values, (data.hyperparameters as { n_epochs?: unknown }).n_epochs)
    } catch (err) {
      if (err instanceof AppError && err.code === 'invalid_early_termination') throw err
      if (!(err instanceof AppError)) throw err
      const what = Object.keys(values).length ? ` (${JSON.stringify(values)})` : ''
      throw new AppError(err.code, `A trial${what} would be refused as a job: ${err.message}`, {
        param: err.param,
        details: err.details,
      })
    }
  }
}

/** The sweep, in `projectId` (null: any project, for the admin routes); 404 otherwise. */
export async function findSweep(app: Pick<FastifyInstance, 'db'>, projectId: string | null, id: string) {
  const sweep = await app.db.sweep.findFirst({ where: { id, ...(projectId ? { projectId } : {}) } })
  if (!sweep) throw notFound('sweep', id)
  return sweep
}

/** The API's sweep object: the request, the status, progress and the best trial so far. */
export async function presentSweep(app: Pick<FastifyInstance, 'db'>, sweep: Sweep): Promise<SweepObject> {
  const spec = sweep.spec as unknown as SweepSpec
  const plan = sweep.plan as TrialValues[]
  const trials = await app.db.fineTuningJob.findMany({
    where: { sweepId: sweep.id },
    select: { id: true, status: true, sweepTrial: true, sweepValues: true, fineTunedModelId: true },
  })
  const best = sweep.bestJobId ? trials.find((t) => t.id === sweep.bestJobId) : undefined
  const bestValue = best ? (await trialMetrics(app, spec.metric, [best])).get(best.id) : undefined
  return {
    id: sweep.id,
    object: 'fine_tuning.sweep',
    created_at: unixSeconds(sweep.createdAt)!,
    finished_at: unixSeconds(sweep.finishedAt),
    status: sweep.status,
    model: spec.model,
    training_file: spec.training_file,
    validation_file: spec.validation_file ?? null,
    method: spec.method,
    search_space: spec.search_space,
    strategy: spec.strategy,
    max_trials: spec.max_trials,
    max_parallel: spec.max_parallel,
    metric: spec.metric,
    goal: spec.goal,
    seed: spec.seed,
    early_termination: spec.early_termination ?? null,
    baseline_trial: spec.baseline_trial ?? false,
    baseline: spec.baseline ? { trial: 0, values: spec.baseline } : null,
    keep_all_models: spec.keep_all_models ?? false,
    suffix: spec.suffix ?? null,
    metadata: spec.metadata ?? null,
    status_reason: sweep.statusReason,
    progress: {
      trials_total: plan.length,
      trials_created: trials.length,
      trials_done: trials.filter((t) => isTerminal(t.status)).length,
      trials_succeeded: trials.filter((t) => t.status === 'succeeded').length,
    },
    best_trial:
      best && bestValue !== undefined
        ? {
            trial: best.sweepTrial ?? 0,
            job_id: best.id,
            values: (best.sweepValues ?? {}) as TrialValues,
            metric_value: bestValue,
          }
        : null,
    best_model: best?.fineTunedModelId ?? null,
  }
}

export async function getSweep(app: FastifyInstance, projectId: string, id: string) {
  return presentSweep(app, await findSweep(app, projectId, id))
}

export async function listSweeps(app: FastifyInstance, projectId: string, query: Page) {
  const { rows, has_more } = await pageSweeps(app, { projectId }, query)
  return { object: 'list' as const, data: await Promise.all(rows.map((s) => presentSweep(app, s))), has_more }
}

/** A newest-first page of the sweeps matching `where` (a project's, or the admin routes' filters). */
export async function pageSweeps(
  app: Pick<FastifyInstance, 'db'>,
  where: { projectId?: string; status?: Sweep['status'] },
  query: Page,
) {
  const limit = query.limit ?? 20
  const cursor = query.after ? await app.db.sweep.findFirst({ where: { id: query.after, ...where } }) : null
  const rows = await app.db.sweep.findMany({
    where: { AND: [where, olderThan(cursor)] },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return { rows: rows.slice(0, limit), has_more: rows.length > limit }
}

/** The sweep's trials in plan order, each its job (as every job route shows it) and its sampled values. */
export async function listTrials(app: FastifyInstance, projectId: string | null, id: string, query: Page) {
  const sweep = await findSweep(app, projectId, id)
  const { rows, limit, values } = await pageTrials(app, sweep, query)
  return toList(rows, limit, (j: FineTuningJob) => presentTrial(j, values, sweep.spec as unknown as SweepSpec))
}

export const presentTrial = (j: FineTuningJob, values: Map<string, number>, spec: Pick<SweepSpec, 'baseline'>) => ({
  object: 'fine_tuning.sweep.trial' as const,
  trial: j.sweepTrial ?? 0,
  values: (j.sweepValues ?? {}) as TrialValues,
  metric_value: values.get(j.id) ?? null,
  baseline: isBaseline(spec, j.sweepTrial),
  job: presentJob(j),
})

/** Whether trial `trial` of a sweep with this spec runs a lone job's defaults (always the first in the plan). */
export const isBaseline = (spec: Pick<SweepSpec, 'baseline'>, trial: number | null) => !!spec.baseline && trial === 0

/** A page of the sweep's trials in plan order (`after`: the last trial's job id) and their metric values. */
export async function pageTrials(app: Pick<FastifyInstance, 'db'>, sweep: Sweep, query: Page) {
  const id = sweep.id
  const spec = sweep.spec as unknown as SweepSpec
  const limit = query.limit ?? 20
  const cursor = query.after
    ? await app.db.fineTuningJob.findFirst({ where: { id: query.after, sweepId: id }, select: { sweepTrial: true } })
    : null
  const rows = await app.db.fineTuningJob.findMany({
    where: { sweepId: id, ...(cursor ? { sweepTrial: { gt: cursor.sweepTrial ?? -1 } } : {}) },
    orderBy: { sweepTrial: 'asc' },
    take: limit + 1,
  })
  const values = await trialMetrics(app, spec.metric, rows)
  return { rows, limit, values }
}

/**
 * Cancel: the sweep is marked cancelled under its lease (so no pass creates a trial after it), then every
 * unfinished trial is cancelled through the job's own cancel (the lifecycle's, with its broadcast).
 */
export async function cancelSweep(app: FastifyInstance, projectId: string, id: string) {
  const sweep = await findSweep(app, projectId, id)
  if (sweep.status !== 'running')
    throw new AppError('sweep_not_cancellable', `Sweep ${id} has already ${sweep.status}.`)
  const marked = await withSweepLease(
    app,
    id,
    async () =>
      app.db.sweep.updateMany({
        where: { id, status: 'running' },
        data: { status: 'cancelled', finishedAt: new Date() },
      }),
    30_000,
  )
  if (marked === null)
    throw new AppError('service_unavailable', `Sweep ${id} is being updated; retry shortly.`, {
      headers: { 'retry-after': '2' },
    })
  if (marked.count === 0) {
    const now = await findSweep(app, projectId, id)
    if (now.status !== 'cancelled')
      throw new AppError('sweep_not_cancellable', `Sweep ${id} has already ${now.status}.`)
  }
  const open = await app.db.fineTuningJob.findMany({ where: { sweepId: id }, select: { id: true, status: true } })
  for (const j of open) {
    if (isTerminal(j.status)) continue
    await cancelJob(app, projectId, j.id).catch((err) => {
      // it ended meanwhile: nothing to cancel
      if (!(err instanceof AppError && err.code === 'job_not_cancellable')) throw err
    })
  }
  // A pass settles it (trial_ended events, the losers pruned, `ended`) once every trial has ended: now, when
  // none was running (a queued trial is cancelled at once); else the worker's, when the last one ends there.
  await advanceSweep(app, id, 5_000)
  return getSweep(app, projectId, id)
}

// ASHA early termination of a sweep's trials: at each rung (epochs min_epochs, min_epochs*rf, ...) a trial
// must be in the top 1/rf (at least one) of the trials that reached that rung, ranked on the sweep's metric
// as the epoch metric rows record it; otherwise it is cancelled through the lifecycle with status_reason
// `early_terminated` and an event giving the rung, its value and the cut-off.
//
// When it runs: inside every advanceSweep pass (under the sweep's lease), which the training job triggers
// right after it writes a sweep trial's epoch rows (workers/training-job.ts, 'epoch'), on whichever worker
// trains it; the reconcile pass runs it too, so a decision missed by a worker that died is made there.
// A running trial is judged at the highest rung it has reached, against every trial that reached that rung
// (earlier trial first on ties). With max_parallel 1 those peers have all ended, so the decision is the same
// whenever (and however often) it is made: which trials ASHA stops is reproducible. With more in parallel a
// trial may pass a rung alone and be stopped later at the same rung once enough peers reached it, but never
// once it has finished training (its last epoch's rows written, or its own early stopping ended it). A stop
// decided at a rung before that stands, even if the training process has raced on to its end meanwhile: the
// decision is the rung's (workers/training-job.ts), so it does not depend on the process's speed.
import type { FineTuningJob } from '../../generated/prisma/client.js'
import { cancelChannel } from '../../queue/catalog.js'
import { readHyperparameters } from '../../schemas/jobs.js'
import type { JobServiceDeps } from '../jobs/jobs-service.js'
import * as lifecycle from '../jobs/lifecycle/lifecycle.js'
import { addSweepEvent } from './sweep-events.js'

export interface AshaSpec {
  type: 'asha'
  min_epochs: number
  reduction_factor: number
}

type Trial = Pick<FineTuningJob, 'id' | 'status' | 'sweepTrial' | 'hyperparameters' | 'statusReason'>

/** How the training process's early-stopping event begins (src/engine/training.ts). */
const EARLY_STOPPING_EVENT = 'early stopping at epoch'

/** A metric in a sentence: 4 significant digits (the event's data keeps the exact value). */
const shown = (v: number) => String(Number(v.toPrecision(4)))

/** The rungs below `maxEpoch`: min_epochs, min_epochs*rf, ... */
export function rungs(asha: AshaSpec, maxEpoch: number): number[] {
  const out: number[] = []
  for (let r = asha.min_epochs; r < maxEpoch; r *= asha.reduction_factor) out.push(r)
  return out
}

/** Stops the running trials that fall outside the top of their rung; returns the ids it stopped. */
export async function applyAsha(
  deps: JobServiceDeps,
  sweep: {
    id: string
    metric: string
    goal: 'maximize' | 'minimize'
    asha: AshaSpec
    /** the baseline trial (a lone job's defaults): ranked at the rungs like any, never stopped */
    protectedTrial?: number | null
  },
  trials: Trial[],
): Promise<string[]> {
  const running = trials.filter(
    (t) =>
      t.status === 'running' &&
      t.statusReason !== lifecycle.EARLY_TERMINATED &&
      (sweep.protectedTrial == null || t.sweepTrial !== sweep.protectedTrial),
  )
  if (!running.length) return []
  const rows = await deps.db.metric.findMany({
    where: { jobId: { in: trials.map((t) => t.id) }, name: sweep.metric },
    select: { jobId: true, epoch: true, step: true, value: true },
    orderBy: { step: 'asc' },
  })
  // trial -> epoch -> value (the last step's row of that epoch: a resumed attempt may rewrite it)
  const byTrial = new Map<string, Map<number, number>>()
  for (const r of rows) {
    if (!Number.isFinite(r.value)) continue
    const m = byTrial.get(r.jobId) ?? new Map<number, number>()
    byTrial.set(r.jobId, m)
    m.set(r.epoch, r.value)
  }
  // Trials whose own early stopping ended their training (its event follows their last epoch's rows): done
  // training, like one that trained its last epoch, so never stopped.
  const earlyStopped = new Set(
    (
      await deps.db.jobEvent.findMany({
        where: { jobId: { in: running.map((t) => t.id) }, message: { startsWith: EARLY_STOPPING_EVENT } },
        select: { jobId: true },
      })
    ).map((e) => e.jobId),
  )
  const order = new Map(trials.map((t) => [t.id, t.sweepTrial ?? 0]))
  const better = (a: [string, number], b: [string, number]) =>
    a[1] !== b[1] ? (sweep.goal === 'maximize' ? b[1] - a[1] : a[1] - b[1]) : order.get(a[0])! - order.get(b[0])!
  const stopped: string[] = []
  for (const t of running) {
    const epochs = byTrial.get(t.id)
    if (!epochs) continue
    const nEpochs = readHyperparameters(t.hyperparameters).n_epochs
    const last = typeof nEpochs === 'number' ? nEpochs : Number.POSITIVE_INFINITY
    const reached = Math.max(...epochs.keys())
    // Finished training (its last epoch's rows are written; it is still `running` while it saves its model):
    // nothing is left to save by stopping it, and with max_parallel > 1 its peers may reach a rung it passed
    // alone only now, which would cancel a trial that completed.
    if (reached >= last || earlyStopped.has(t.id)) continue
    const rung = rungs(sweep.asha, reached + 1).at(-1)
    if (rung === undefined || !epochs.has(rung)) continue
    const atRung: [string, number][] = []
    for (const [id, m] of byTrial) if (m.has(rung)) atRung.push([id, m.get(rung)!])
    atRung.sort(better)
    const keep = Math.max(1, Math.floor(atRung.length / sweep.asha.reduction_factor))
    const rank = atRung.findIndex(([id]) => id === t.id)
    if (rank < keep) continue
    const value = epochs.get(rung)!
    const cutoff = atRung[keep - 1]![1]
    const data = {
      rung,
      metric: sweep.metric,
      value,
      cutoff,
      trials_at_rung: atRung.length,
      kept: keep,
      reduction_factor: sweep.asha.reduction_factor,
    }
    const applied = await lifecycle.cancelByUser(deps, t.id, {
      by: {
        statusReason: lifecycle.EARLY_TERMINATED,
        event: {
          level: 'info',
          message: `Early terminated by the sweep's ASHA at rung ${rung} (epoch ${rung}): ${sweep.metric} ${shown(value)} is outside the top ${keep} of the ${atRung.length} trials that reached it (cut-off ${shown(cutoff)}); stopping at the end of the current batch`,
          data,
        },
      },
    })
    if (applied === 'request_cancel')
      await deps.redis.publish(cancelChannel(deps.config.queuePrefix), t.id).catch((err) => {
        deps.log.warn({ err: err.message, jobId: t.id }, 'cancel broadcast failed; the worker also polls')
      })
    if (applied) {
      stopped.push(t.id)
      await addSweepEvent(
        deps,
        sweep.id,
        `early_terminated:${t.sweepTrial}`,
        'early_terminated',
        `Trial ${(t.sweepTrial ?? 0) + 1} early terminated at rung ${rung}: ${sweep.metric} ${shown(value)} ${sweep.goal === 'maximize' ? 'below' : 'above'} the cut-off ${shown(cutoff)}`,
        { trial: t.sweepTrial, job_id: t.id, ...data },
      )
    }
  }
  return stopped
}

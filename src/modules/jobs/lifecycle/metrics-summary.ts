// A job's final and best metrics, computed once (when the job succeeds, inside its transaction) with one
// definition of "best", stored in the model's metadata and read from there. Before this there were three
// definitions (the engine's early-stopping epoch, the worker's max val_accuracy, the API's
// val_accuracy ?? accuracy recomputed on every read) and `metrics.best` could name a different epoch
// than `best_epoch` and than the weights the model holds.
//
// The definition: with early stopping the engine restores the weights of the epoch that was best by its
// monitor (val_loss or val_accuracy), so "best" is that epoch, judged by that metric, and it is the epoch
// whose weights the model holds. Without early stopping the model holds the last epoch's weights and
// "best" is the epoch with the highest val_accuracy (accuracy when there was no validation data), the
// earliest on ties. Either way the summary names the epoch (`best.epoch`, `best_epoch`), the metric
// (`best_by`) and the epoch whose weights were delivered (`delivered_epoch`).

export interface MetricRow {
  step: number
  epoch: number
  name: string
  value: number
}

/** One epoch's figures: `{step, epoch, loss, accuracy, val_loss?, val_accuracy?, ...}`. */
export type EpochMetrics = { step: number; epoch: number } & Record<string, number>

export interface BestBy {
  /** the metric that decided, e.g. `val_accuracy` */
  metric: string
  /** whether higher (`max`) or lower (`min`) is better */
  mode: 'max' | 'min'
  /** `early_stopping`: the engine's monitor, whose weights it restored; `highest`: the best epoch seen */
  rule: 'early_stopping' | 'highest'
}

export interface MetricsSummary {
  final: EpochMetrics | null
  best: EpochMetrics | null
  best_epoch: number | null
  best_by: BestBy | null
  /** the epoch whose weights the model holds */
  delivered_epoch: number | null
  evaluation: Record<string, unknown> | null
}

function byStep(rows: MetricRow[]): EpochMetrics[] {
  const steps = new Map<number, EpochMetrics>()
  for (const r of rows) {
    const m = steps.get(r.step) ?? ({ step: r.step, epoch: r.epoch } as EpochMetrics)
    m[r.name] = r.value
    steps.set(r.step, m)
  }
  return [...steps.values()].sort((a, b) => a.step - b.step)
}

/**
 * The summary of a job's metric rows. `earlyStopping`: the job's early-stopping setting and the epoch the
 * engine restored (its `bestEpoch`), when it ran with early stopping.
 */
export function summarizeMetrics(
  rows: MetricRow[],
  opts: {
    earlyStopping?: { monitor: 'val_loss' | 'val_accuracy'; bestEpoch: number | null } | null
    evaluation?: Record<string, unknown> | null
  } = {},
): MetricsSummary {
  const epochs = byStep(rows)
  const final = epochs.at(-1) ?? null
  let best: EpochMetrics | null = null
  let bestBy: BestBy | null = null
  const es = opts.earlyStopping
  if (es && es.bestEpoch !== null) {
    // The engine monitors the training counterpart when there is no validation data.
    const metric = epochs.some((e) => e[es.monitor] !== undefined) ? es.monitor : es.monitor.slice(4)
    // the last row of that epoch: a transfer job's fine-tune phase continues the epoch numbering
    best = epochs.filter((e) => e.epoch === es.bestEpoch).at(-1) ?? null
    bestBy = { metric, mode: metric.endsWith('loss') ? 'min' : 'max', rule: 'early_stopping' }
  }
  if (!best) {
    const metric = epochs.some((e) => e.val_accuracy !== undefined) ? 'val_accuracy' : 'accuracy'
    for (const e of epochs) {
      const v = e[metric]
      if (v === undefined) continue
      if (!best || v > best[metric]) best = e
    }
    bestBy = best ? { metric, mode: 'max', rule: 'highest' } : null
  }
  const delivered = bestBy?.rule === 'early_stopping' ? best : final
  return {
    final,
    best,
    best_epoch: best?.epoch ?? null,
    best_by: bestBy,
    delivered_epoch: delivered?.epoch ?? null,
    evaluation: opts.evaluation ?? null,
  }
}

import { LabelCounter } from './classes.js'
import type { DatasetLimits } from './limits.js'

/** Receives each valid row while a file is read, so loading needs no second pass. */
export type RowSink = (features: ArrayLike<number>, label: string) => void

export interface TabularReadOptions {
  limits: DatasetLimits
  onRow?: RowSink
}

/** What a tabular reader learned: feature count and per-label counts of the valid rows. */
export interface TabularScan {
  featureCount: number
  labels: LabelCounter
}

export function newScan(limits?: DatasetLimits): TabularScan {
  return { featureCount: 0, labels: new LabelCounter(limits) }
}

/** Parses a numeric cell strictly: empty, "NaN", "Infinity" and trailing junk are refused. */
export function parseNumber(cell: string): number | undefined {
  const s = cell.trim()
  if (s === '') return undefined
  const n = Number(s)
  return Number.isFinite(n) ? n : undefined
}

import { DatasetValidationError } from './errors.js'
import type { DatasetFormat } from './types.js'

const FORMAT_NAMES: Record<DatasetFormat, string> = {
  csv: 'CSV file',
  jsonl: 'JSONL file',
  image_zip: 'image zip',
  idx: 'IDX zip',
}

export function formatName(format: DatasetFormat): string {
  return FORMAT_NAMES[format]
}

function isNumeric(s: string): boolean {
  return s.trim() !== '' && Number.isFinite(Number(s))
}

/**
 * Model output order. Numeric labels sort by value so "10" comes after "9" and class index i of digits
 * is the digit itself; ties such as "1" and "1.0" fall back to string order to stay deterministic.
 */
export function sortClasses(labels: Iterable<string>): string[] {
  const classes = [...labels]
  if (classes.every(isNumeric)) {
    return classes.sort((a, b) => Number(a) - Number(b) || (a < b ? -1 : a > b ? 1 : 0))
  }
  return classes.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
}

/** Counts samples per label and enforces the minimum a classifier needs: two classes, one sample each. */
export class LabelCounter {
  private readonly counts = new Map<string, number>()
  rows = 0

  add(label: string): void {
    this.counts.set(label, (this.counts.get(label) ?? 0) + 1)
    this.rows++
  }

  /** Sorted classes and their counts; throws `empty_dataset` / `too_few_classes`. */
  finish(format: DatasetFormat): { classes: string[]; class_counts: number[]; rows: number } {
    const name = formatName(format)
    if (this.rows === 0) {
      throw new DatasetValidationError('empty_dataset', `The ${name} contains no samples; add at least two classes.`)
    }
    const classes = sortClasses(this.counts.keys())
    if (classes.length < 2) {
      throw new DatasetValidationError(
        'too_few_classes',
        `The ${name} has only one class (${JSON.stringify(classes[0])}); a classifier needs at least 2 classes.`,
      )
    }
    return { classes, class_counts: classes.map((c) => this.counts.get(c)!), rows: this.rows }
  }
}

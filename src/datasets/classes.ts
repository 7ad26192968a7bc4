import { hasUnsafeText } from '../lib/text.js'
import { DatasetValidationError } from './errors.js'
import { type DatasetLimits, DEFAULT_DATASET_LIMITS } from './limits.js'
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

  constructor(private readonly limits: Pick<DatasetLimits, 'maxClasses' | 'maxLabelChars'> = DEFAULT_DATASET_LIMITS) {}

  /** Counts one sample; refuses, as soon as it is seen, a label that is too long or unsafe, or one class too many. */
  add(label: string): void {
    const n = this.counts.get(label)
    if (n === undefined) {
      if (label.length > this.limits.maxLabelChars)
        throw new DatasetValidationError(
          'invalid_label',
          `A label is ${label.length} characters long (${JSON.stringify(label.slice(0, 40))}…); the limit is ${this.limits.maxLabelChars}.`,
        )
      if (hasUnsafeText(label))
        throw new DatasetValidationError(
          'invalid_label',
          `A label holds a NUL character or an unpaired UTF-16 surrogate (${JSON.stringify(label.slice(0, 40))}); labels must be plain text.`,
        )
      if (this.counts.size >= this.limits.maxClasses)
        throw new DatasetValidationError(
          'too_many_classes',
          `The dataset has more than ${this.limits.maxClasses} distinct labels; the limit is ${this.limits.maxClasses} (MAX_CLASSES). Is the label column the right one?`,
        )
    }
    this.counts.set(label, (n ?? 0) + 1)
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

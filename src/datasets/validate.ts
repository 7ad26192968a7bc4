import { formatName } from './classes.js'
import { readCsv } from './csv-reader.js'
import { detectFormat } from './detect-format.js'
import { DatasetValidationError } from './errors.js'
import { readIdx } from './idx-reader.js'
import { readImageZip } from './image-zip-reader.js'
import { readJsonl } from './jsonl-reader.js'
import { type DatasetLimits, resolveLimits } from './limits.js'
import type { DatasetFormat, DatasetStats } from './types.js'

export { type DatasetLimits, DEFAULT_DATASET_LIMITS } from './limits.js'

/** Options of validateDataset. */
export interface ValidateOptions {
  /** skip detection and read the file as this format */
  format?: DatasetFormat
  /** CSV label column; default `label` */
  labelColumn?: string
  limits?: Partial<DatasetLimits>
}

const FORMATS: readonly string[] = ['csv', 'jsonl', 'image_zip', 'idx'] satisfies DatasetFormat[]

/** Throws `unrecognized_format` for a format name that is not one of ours (e.g. from an API request). */
export function assertFormat(format: string): asserts format is DatasetFormat {
  if (!FORMATS.includes(format)) {
    throw new DatasetValidationError(
      'unrecognized_format',
      `Unknown dataset format "${format}"; use one of ${FORMATS.join(', ')}.`,
    )
  }
}

/**
 * Reads a whole dataset file once, checking everything training will rely on, and summarizes it.
 * Throws DatasetValidationError for bad data (with up to 20 located problems in `details`); I/O errors such
 * as a missing file propagate as they are, since they are the server's fault, not the user's.
 */
export async function validateDataset(
  path: string,
  opts: ValidateOptions = {},
): Promise<{ format: DatasetFormat; stats: DatasetStats }> {
  const limits = resolveLimits(opts.limits)
  const format = opts.format ?? (await detectFormat(path))
  assertFormat(format)
  switch (format) {
    case 'csv':
    case 'jsonl': {
      const scan =
        format === 'csv'
          ? await readCsv(path, { limits, labelColumn: opts.labelColumn })
          : await readJsonl(path, { limits })
      return { format, stats: { ...scan.labels.finish(format), feature_count: scan.featureCount } }
    }
    case 'image_zip': {
      const scan = await readImageZip(path, { limits })
      const summary = scan.labels.finish(format)
      if (!scan.firstShape)
        throw new DatasetValidationError('empty_dataset', `The ${formatName(format)} has no images.`)
      return { format, stats: { ...summary, image_shape: scan.firstShape } }
    }
    case 'idx': {
      const scan = await readIdx(path, { limits })
      return { format, stats: { ...scan.labels.finish(format), image_shape: scan.shape } }
    }
  }
}

import { DatasetValidationError, ProblemCollector } from './errors.js'
import { readLines } from './lines.js'
import { newScan, type TabularReadOptions, type TabularScan } from './tabular.js'

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

const CHAT_FORMAT_MESSAGE =
  'This is an OpenAI chat/completions dataset ({"messages": …} or {"prompt", "completion"}). Refit trains classifiers, not language models: ' +
  'upload JSONL lines like {"features": [0.1, 0.2], "label": "cat"}, a CSV with a label column, a zip of image folders (one folder per class), or a zip of IDX files.'

/** A line of OpenAI's fine-tuning formats (chat `messages`, preference `input`, legacy `prompt`/`completion`). */
function isOpenAiTextExample(v: Record<string, unknown>): boolean {
  if ('features' in v) return false
  return Array.isArray(v.messages) || (typeof v.prompt === 'string' && 'completion' in v) || isRecord(v.input)
}

/**
 * Reads JSON Lines, one `{"features": [numbers], "label": string | number}` per line, all lines with the
 * same number of features. Streams the file; problems are collected (up to 20) and thrown as `invalid_jsonl`.
 */
export async function readJsonl(path: string, opts: TabularReadOptions): Promise<TabularScan> {
  const { limits } = opts
  const problems = new ProblemCollector('invalid_jsonl', 'JSONL file')
  const scan = newScan(opts.limits)
  // Line of the first valid row: the reference for the feature count.
  let firstLine = 0

  for await (const { line, text } of readLines(path, limits.maxLineBytes, problems)) {
    if (text.trim() === '') continue
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (e) {
      problems.add({ line, message: `the line is not valid JSON (${(e as Error).message})` })
      continue
    }
    if (!isRecord(value)) {
      problems.add({ line, message: 'the line must be a JSON object like {"features": [1, 2], "label": "a"}' })
      continue
    }
    // An OpenAI chat/completions dataset: one clear answer instead of a "features" problem per line.
    if (firstLine === 0 && problems.problems.length === 0 && isOpenAiTextExample(value))
      throw new DatasetValidationError('chat_format_not_supported', CHAT_FORMAT_MESSAGE, [
        {
          line,
          message: `the line has ${Object.keys(value)
            .map((k) => `"${k}"`)
            .join(', ')}, not "features" and "label"`,
        },
      ])
    const { features, label } = value
    let ok = true
    if (!Array.isArray(features) || features.length === 0) {
      problems.add({ line, field: 'features', message: '"features" must be a non-empty array of numbers' })
      ok = false
    } else {
      // One problem per line for features: a line of 784 strings should not fill the whole report.
      const bad = features.findIndex((f) => typeof f !== 'number' || !Number.isFinite(f))
      if (bad !== -1) {
        problems.add({
          line,
          field: `features[${bad}]`,
          message: `${JSON.stringify(features[bad]) ?? String(features[bad])} is not a finite number`,
        })
        ok = false
      } else if (features.length > limits.maxFeatures) {
        throw new DatasetValidationError(
          'dataset_too_large',
          `Line ${line} of the JSONL file has ${features.length} features; the limit is ${limits.maxFeatures}.`,
          [{ line, field: 'features', message: `${features.length} features` }],
        )
      } else if (firstLine !== 0 && features.length !== scan.featureCount) {
        problems.add({
          line,
          field: 'features',
          message: `the line has ${features.length} features; line ${firstLine} has ${scan.featureCount}`,
        })
        ok = false
      }
    }
    let labelText = ''
    if (typeof label === 'number' && Number.isFinite(label)) labelText = String(label)
    else if (typeof label === 'string' && label.trim() !== '') labelText = label.trim()
    else {
      problems.add({ line, field: 'label', message: '"label" must be a non-empty string or a number' })
      ok = false
    }
    if (!ok) continue
    const row = features as number[]
    if (firstLine === 0) {
      firstLine = line
      scan.featureCount = row.length
    }
    if (scan.labels.rows >= limits.maxRows) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The JSONL file has more than ${limits.maxRows} rows; split it or lower its size.`,
        [{ line, message: `row limit ${limits.maxRows} exceeded` }],
      )
    }
    scan.labels.add(labelText)
    opts.onRow?.(row, labelText)
  }
  problems.throwIfAny()
  return scan
}

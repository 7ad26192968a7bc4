import { DatasetValidationError, ProblemCollector } from './errors.js'
import { readLines } from './lines.js'
import { newScan, parseNumber, type TabularReadOptions, type TabularScan } from './tabular.js'

/** Splits one CSV line on commas, honouring double quotes ("a,b" and "" escapes). No multi-line cells. */
export function splitCsvLine(text: string): string[] | undefined {
  const cells: string[] = []
  let cell = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          cell += '"'
          i++
        } else quoted = false
      } else cell += ch
    } else if (ch === '"') quoted = true
    else if (ch === ',') {
      cells.push(cell)
      cell = ''
    } else cell += ch
  }
  if (quoted) return undefined
  cells.push(cell)
  return cells
}

/**
 * Reads a CSV with a header row: one label column (default `label`), every other column a numeric feature.
 * Streams the file; invalid rows are collected (up to 20) and thrown together as `invalid_csv`.
 */
export async function readCsv(path: string, opts: TabularReadOptions & { labelColumn?: string }): Promise<TabularScan> {
  const labelColumn = opts.labelColumn ?? 'label'
  const { limits } = opts
  const problems = new ProblemCollector('invalid_csv', 'CSV file')
  const scan = newScan(opts.limits)
  let header: string[] | undefined
  let labelIndex = -1
  // Column index of each feature, in file order (the label column may sit anywhere).
  let featureColumns: number[] = []
  let features = new Float64Array(0)

  for await (const { line, text } of readLines(path, limits.maxLineBytes, problems)) {
    if (text.trim() === '') continue
    const cells = splitCsvLine(text)
    if (!cells) {
      problems.add({ line, message: 'a double quote is opened but never closed' })
      continue
    }
    if (!header) {
      header = cells.map((c) => c.trim())
      const seen = new Set<string>()
      for (const [i, name] of header.entries()) {
        if (name === '') problems.add({ line, field: `#${i + 1}`, message: `column ${i + 1} has an empty name` })
        else if (seen.has(name)) problems.add({ line, field: name, message: `column "${name}" appears twice` })
        seen.add(name)
      }
      labelIndex = header.indexOf(labelColumn)
      if (labelIndex === -1) {
        problems.fail({
          line,
          field: labelColumn,
          message: `the header has no column "${labelColumn}" (columns: ${header.slice(0, 20).join(', ')}); name the label column "${labelColumn}" or pass labelColumn`,
        })
      }
      featureColumns = header.map((_, i) => i).filter((i) => i !== labelIndex)
      if (featureColumns.length === 0) {
        problems.fail({ line, message: 'the header has no feature column besides the label' })
      }
      if (featureColumns.length > limits.maxFeatures) {
        throw new DatasetValidationError(
          'dataset_too_large',
          `The CSV file has ${featureColumns.length} feature columns; the limit is ${limits.maxFeatures}.`,
          [{ line, message: `${featureColumns.length} feature columns` }],
        )
      }
      scan.featureCount = featureColumns.length
      features = new Float64Array(featureColumns.length)
      // Header problems (duplicates) make every row ambiguous: report them alone.
      problems.throwIfAny()
      continue
    }

    if (cells.length !== header.length) {
      problems.add({ line, message: `the row has ${cells.length} cells; the header has ${header.length} columns` })
      continue
    }
    let ok = true
    const label = cells[labelIndex]!.trim()
    if (label === '') {
      problems.add({ line, field: labelColumn, message: 'the label is empty' })
      ok = false
    }
    for (let j = 0; j < featureColumns.length; j++) {
      const col = featureColumns[j]!
      const value = parseNumber(cells[col]!)
      if (value === undefined) {
        problems.add({ line, field: header[col], message: `${JSON.stringify(cells[col]!.trim())} is not a number` })
        ok = false
      } else features[j] = value
    }
    if (!ok) continue
    if (scan.labels.rows >= limits.maxRows) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The CSV file has more than ${limits.maxRows} rows; split it or lower its size.`,
        [{ line, message: `row limit ${limits.maxRows} exceeded` }],
      )
    }
    scan.labels.add(label)
    opts.onRow?.(features, label)
  }
  problems.throwIfAny()
  if (!header)
    throw new DatasetValidationError('empty_dataset', 'The CSV file is empty; it needs a header row and data rows.')
  return scan
}

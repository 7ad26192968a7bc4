import { randomBytes } from 'node:crypto'

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'

/** Id prefixes of the wire format (OpenAI-style: `file-…`, `ftjob-…`). */
export type IdPrefix =
  | 'proj'
  | 'key'
  | 'file'
  | 'ftjob'
  | 'ftevent'
  | 'ftckpt'
  | 'art'
  | 'model'
  | 'eval'
  | 'wh'
  | 'whdel'
  | 'feat'
  | 'sweep'
  | 'swevent'

/** A random id with ~124 bits of entropy: `<prefix>-<24 base36 chars>`. */
export function newId(prefix: IdPrefix): string {
  const bytes = randomBytes(24)
  let out = ''
  for (const b of bytes) out += ALPHABET[b % 36]
  return `${prefix}-${out}`
}

/** The short job id used in fine-tuned model names: `ft:<base>:<suffix>:<short>`. */
export function jobShortId(jobId: string): string {
  return jobId.slice(jobId.indexOf('-') + 1, jobId.indexOf('-') + 9)
}

/** `full`: the whole random part of the job id, for the rare short name another job's model already has. */
export function fineTunedModelId(
  baseModelId: string,
  suffix: string | null,
  jobId: string,
  opts: { full?: boolean } = {},
): string {
  const base = baseModelId.startsWith('ft:') ? baseModelId.split(':')[1] : baseModelId
  const short = opts.full ? jobId.slice(jobId.indexOf('-') + 1) : jobShortId(jobId)
  return `ft:${base}:${suffix || 'refit'}:${short}`
}

/**
 * A checkpoint's OpenAI-style name, `ft:<base>:<suffix|refit>:<short id>:ckpt-step-<N>`: unique, fixed from
 * the job's creation whatever its status, and accepted as `model` like the checkpoint's `ftckpt-` id.
 */
export function checkpointModelId(baseModelId: string, suffix: string | null, jobId: string, step: number): string {
  return `${fineTunedModelId(baseModelId, suffix, jobId)}:ckpt-step-${step}`
}

/** The parts of a checkpoint name, or null when `name` is not one. */
export function parseCheckpointModelId(name: string): { shortId: string; step: number } | null {
  const m = /^ft:[^:]+:[^:]+:([a-z0-9]{8}):ckpt-step-(\d{1,9})$/.exec(name)
  return m ? { shortId: m[1]!, step: Number(m[2]) } : null
}

/**
 * The id of a job's `fine-tune-results` file: `file-` + the job id's random part, so a job names its result
 * file without a column (the file row is written in the transaction that marks the job succeeded).
 */
export function resultFileId(jobId: string): string {
  return `file-${jobId.slice(jobId.indexOf('-') + 1)}`
}

export const unixSeconds = (d: Date | null | undefined): number | null => (d ? Math.floor(d.getTime() / 1000) : null)

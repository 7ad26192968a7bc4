import type { MultipartFile, MultipartValue } from '@fastify/multipart'
import type { FastifyInstance } from 'fastify'
import type { DatasetFormat } from '../../datasets/types.js'
import { AppError, notFound } from '../../errors.js'
import type { File } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, newerThan, OLDEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { FILE_JOB_OPTIONS } from '../../queue/catalog.js'
import { deleteFileFeatures } from '../features/feature-cache-service.js'
import { reserveUpload } from '../limits/storage-reservation.js'

const FORMATS: DatasetFormat[] = ['csv', 'jsonl', 'image_zip', 'idx']
export const UNFINISHED = ['validating_files', 'queued', 'running', 'cancelling', 'paused'] as const

export interface FileError {
  code: string
  message: string
  details?: { line?: number; entry?: string; field?: string; message: string }[]
}

/** Classes a list answer carries per file; GET by id carries them all. */
export const LIST_CLASSES = 100

/**
 * In lists, stats gain `class_count` and `classes_truncated`, and `classes`/`class_counts` are cut to
 * the first LIST_CLASSES, so a page of files stays small whatever the datasets hold; GET by id is whole.
 */
function presentStats(stats: Record<string, unknown> | null, forList: boolean) {
  if (!forList || !stats || !Array.isArray(stats.classes)) return stats
  const classes = stats.classes as unknown[]
  const cut = forList && classes.length > LIST_CLASSES
  return {
    ...stats,
    classes: cut ? classes.slice(0, LIST_CLASSES) : classes,
    ...(Array.isArray(stats.class_counts)
      ? { class_counts: cut ? stats.class_counts.slice(0, LIST_CLASSES) : stats.class_counts }
      : {}),
    class_count: classes.length,
    classes_truncated: cut,
  }
}

/** A file as list routes show it: classes cut to the first LIST_CLASSES. */
export const presentFileInList = (f: File) => presentFile(f, true)

/** The wire object: OpenAI's file plus format, status details and dataset stats. */
export function presentFile(f: File, forList = false) {
  const err = (f.statusDetails as FileError | null) ?? null
  return {
    id: f.id,
    object: 'file' as const,
    bytes: Number(f.bytes),
    created_at: unixSeconds(f.createdAt)!,
    filename: f.filename,
    purpose: f.purpose,
    format: f.format,
    status: f.status,
    status_details: err ? err.message : null,
    error: err,
    stats: presentStats((f.stats as Record<string, unknown> | null) ?? null, forList),
    expires_at: unixSeconds(f.expiresAt),
  }
}

/** OpenAI's `expires_after` bounds: one hour to 30 days after upload. */
export const EXPIRES_AFTER_SECONDS = { min: 3600, max: 2_592_000 } as const

/** `expires_after[anchor]` / `expires_after[seconds]` multipart fields -> seconds after upload, or null. */
function parseExpiresAfter(fields: Record<string, string>): number | null {
  const anchor = fields['expires_after[anchor]']
  const seconds = fields['expires_after[seconds]']
  if (anchor === undefined && seconds === undefined) return null
  if (anchor !== 'created_at')
    throw new AppError(
      'invalid_field',
      `expires_after[anchor] must be "created_at", got ${JSON.stringify(anchor ?? null)}.`,
      {
        param: 'expires_after[anchor]',
      },
    )
  const n = Number(seconds)
  const { min, max } = EXPIRES_AFTER_SECONDS
  if (seconds === undefined || !/^\d+$/.test(seconds) || n < min || n > max)
    throw new AppError(
      'invalid_field',
      `expires_after[seconds] must be a whole number of seconds from ${min} (1 hour) to ${max} (30 days), got ${JSON.stringify(seconds ?? null)}.`,
      { param: 'expires_after[seconds]' },
    )
  return n
}

/**
 * Streams a multipart upload to storage, then records it and queues its validation. Fields may come
 * before or after the file part; when any is wrong the stored bytes are removed before answering.
 */
export async function uploadFile(
  app: FastifyInstance,
  projectId: string,
  parts: AsyncIterableIterator<MultipartFile | MultipartValue>,
  contentLength?: number,
) {
  // before a byte is read: a body that cannot fit the quota is refused here
  const reservation = await reserveUpload(app, projectId, contentLength)
  const id = newId('file')
  const key = `files/${id}`
  const fields: Record<string, string> = {}
  let stored: { bytes: number; sha256: string } | null = null
  let filename = 'upload'
  try {
    for await (const part of parts) {
      if (part.type === 'file') {
        if (part.fieldname !== 'file' || stored) {
          part.file.resume()
          throw new AppError('invalid_request', 'Send exactly one file, in the multipart field `file`.', {
            param: part.fieldname,
          })
        }
        filename = part.filename || 'upload'
        stored = await app.storage.writeStream(key, reservation.through(part.file))
        if (part.file.truncated) throw new AppError('file_too_large', 'The file is larger than the upload limit.')
      } else {
        fields[part.fieldname] = String(part.value)
      }
    }
    if (!stored) throw new AppError('missing_file', 'The multipart body has no `file` part.', { param: 'file' })
    const purpose = fields.purpose
    if (purpose !== 'fine-tune')
      throw new AppError('invalid_purpose', `purpose must be "fine-tune", got ${JSON.stringify(purpose ?? null)}.`, {
        param: 'purpose',
      })
    const format = fields.format || null
    if (format !== null && !FORMATS.includes(format as DatasetFormat))
      throw new AppError('invalid_format', `format must be one of ${FORMATS.join(', ')}, got "${format}".`, {
        param: 'format',
      })
    const labelColumn = fields.label_column || null
    if (labelColumn !== null && (labelColumn.length > 200 || /[\r\n,"]/.test(labelColumn)))
      throw new AppError('invalid_field', 'label_column must be a column name (no commas, quotes or newlines).', {
        param: 'label_column',
      })
    const expiresAfter = parseExpiresAfter(fields)
    for (const name of Object.keys(fields))
      if (!['purpose', 'format', 'label_column', 'expires_after[anchor]', 'expires_after[seconds]'].includes(name))
        throw new AppError('invalid_field', `Unknown multipart field "${name}".`, { param: name })
    if (stored.bytes === 0) throw new AppError('invalid_request', 'The file is empty.', { param: 'file' })
    const createdAt = new Date()
    const row = await app.db.file.create({
      data: {
        id,
        createdAt,
        expiresAt: expiresAfter === null ? null : new Date(createdAt.getTime() + expiresAfter * 1000),
        projectId,
        filename: filename.slice(0, 255),
        purpose,
        format: format as DatasetFormat | null,
        labelColumn,
        bytes: BigInt(stored.bytes),
        sha256: stored.sha256,
        storagePath: key,
      },
    })
    // A lost enqueue (Redis down) is repaired by the worker's reconciler, which re-queues `uploaded` files.
    await app.queues.files.add('validate-file', { fileId: id }, { ...FILE_JOB_OPTIONS, jobId: id }).catch((err) => {
      app.log.warn({ err: err.message, fileId: id }, 'could not enqueue file validation; the reconciler will')
    })
    return presentFile(row)
  } catch (err) {
    await app.storage.remove(key)
    throw err
  } finally {
    // the row (when created) counts the bytes from now on
    await reservation.release()
  }
}

/** OpenAI's `files.list` parameters: a page, in either order, of one purpose or all. */
export interface FileListQuery extends Page {
  purpose?: string
  order?: 'asc' | 'desc'
}

export async function listFiles(app: FastifyInstance, projectId: string, query: FileListQuery) {
  const limit = query.limit ?? 20
  const asc = query.order === 'asc'
  const cursor = query.after
    ? await app.db.file.findFirst({ where: { id: query.after, projectId, deletedAt: null } })
    : null
  const rows = await app.db.file.findMany({
    where: {
      projectId,
      deletedAt: null,
      ...(query.purpose ? { purpose: query.purpose } : {}),
      ...(asc ? newerThan(cursor) : olderThan(cursor)),
    },
    orderBy: asc ? OLDEST_FIRST : NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentFileInList)
}

/** The file's bytes as stored (a dataset as uploaded, or a job's result CSV), streamed. */
export async function fileContent(app: FastifyInstance, projectId: string, id: string) {
  const row = await getFile(app, projectId, id)
  // A file rejected by validation has had its bytes removed.
  if (!row.storagePath)
    throw new AppError('file_not_ready', `File ${id} failed validation; its bytes were not kept.`, { param: 'id' })
  return { row, stream: await app.storage.read(row.storagePath) }
}

interface ExpiryDeps {
  db: FastifyInstance['db']
  storage: FastifyInstance['storage']
}

/**
 * Deletes files whose `expires_after` has passed, like DELETE /v1/files/{id} would. A file an unfinished
 * job still uses waits: it is deleted on the first sweep after that job ends. Run by the workers' reconciler.
 */
export async function deleteExpiredFiles(deps: ExpiryDeps, now = new Date()): Promise<number> {
  const due = await deps.db.file.findMany({
    where: {
      deletedAt: null,
      expiresAt: { lte: now },
      trainingJobs: { none: { status: { in: [...UNFINISHED] } } },
      validationJobs: { none: { status: { in: [...UNFINISHED] } } },
    },
    take: 100,
  })
  let deleted = 0
  for (const f of due) {
    const r = await deps.db.file.updateMany({
      where: { id: f.id, deletedAt: null },
      data: { deletedAt: now, storagePath: null },
    })
    if (!r.count) continue // another worker's sweep got it
    deleted++
    if (f.storagePath) await deps.storage.remove(f.storagePath)
    await deleteFileFeatures(deps, f.projectId, f.id)
  }
  return deleted
}

export async function getFile(app: FastifyInstance, projectId: string, id: string) {
  const row = await app.db.file.findFirst({ where: { id, projectId, deletedAt: null } })
  if (!row) throw notFound('file', id)
  return row
}

/** Deletes the bytes and hides the row (jobs keep their reference); refused while a job still needs it. */
export async function deleteFile(app: FastifyInstance, projectId: string, id: string) {
  const row = await getFile(app, projectId, id)
  const busy = await app.db.fineTuningJob.count({
    where: {
      status: { in: [...UNFINISHED] },
      OR: [{ trainingFileId: id }, { validationFileId: id }],
    },
  })
  if (busy) throw new AppError('file_in_use', `File ${id} is used by ${busy} unfinished job(s); cancel them first.`)
  await app.db.file.update({ where: { id }, data: { deletedAt: new Date(), storagePath: null } })
  if (row.storagePath) await app.storage.remove(row.storagePath)
  await deleteFileFeatures(app, projectId, id)
  return { id, object: 'file' as const, deleted: true }
}

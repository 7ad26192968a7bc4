import type { MultipartFile, MultipartValue } from '@fastify/multipart'
import type { FastifyInstance } from 'fastify'
import type { DatasetFormat } from '../../datasets/types.js'
import { AppError, notFound } from '../../errors.js'
import type { File } from '../../generated/prisma/client.js'
import { newId, unixSeconds } from '../../lib/ids.js'
import { NEWEST_FIRST, olderThan, type Page, toList } from '../../lib/pagination.js'
import { FILE_JOB_OPTIONS } from '../../queue/catalog.js'
import { deleteFileFeatures } from '../features/feature-cache-service.js'
import { assertStorageQuota } from '../limits/limits-service.js'

const FORMATS: DatasetFormat[] = ['csv', 'jsonl', 'image_zip', 'idx']
const UNFINISHED = ['validating_files', 'queued', 'running', 'cancelling'] as const

export interface FileError {
  code: string
  message: string
  details?: { line?: number; entry?: string; field?: string; message: string }[]
}

/** The wire object: OpenAI's file plus format, status details and dataset stats. */
export function presentFile(f: File) {
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
    stats: (f.stats as Record<string, unknown> | null) ?? null,
  }
}

/**
 * Streams a multipart upload to storage, then records it and queues its validation. Fields may come
 * before or after the file part; when any is wrong the stored bytes are removed before answering.
 */
export async function uploadFile(
  app: FastifyInstance,
  projectId: string,
  parts: AsyncIterableIterator<MultipartFile | MultipartValue>,
) {
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
        stored = await app.storage.writeStream(key, part.file)
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
    for (const name of Object.keys(fields))
      if (!['purpose', 'format', 'label_column'].includes(name))
        throw new AppError('invalid_field', `Unknown multipart field "${name}".`, { param: name })
    if (stored.bytes === 0) throw new AppError('invalid_request', 'The file is empty.', { param: 'file' })
    await assertStorageQuota(app, projectId, stored.bytes)
    const row = await app.db.file.create({
      data: {
        id,
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
  }
}

export async function listFiles(app: FastifyInstance, projectId: string, page: Page) {
  const limit = page.limit ?? 20
  const cursor = page.after
    ? await app.db.file.findFirst({ where: { id: page.after, projectId, deletedAt: null } })
    : null
  const rows = await app.db.file.findMany({
    where: { projectId, deletedAt: null, ...olderThan(cursor) },
    orderBy: NEWEST_FIRST,
    take: limit + 1,
  })
  return toList(rows, limit, presentFile)
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

/** Newest-first keyset pagination over (createdAt, id), with `after` = the last id of the previous page. */
export interface Page {
  limit?: number
  after?: string
}

export interface Cursor {
  createdAt: Date
  id: string
}

/** Prisma `where` clause selecting rows strictly older than the cursor row. */
export function olderThan(cursor: Cursor | null) {
  if (!cursor) return {}
  return {
    OR: [{ createdAt: { lt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { lt: cursor.id } }],
  }
}

/** Prisma `where` clause selecting rows strictly newer than the cursor row (oldest-first pages). */
export function newerThan(cursor: Cursor | null) {
  if (!cursor) return {}
  return {
    OR: [{ createdAt: { gt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { gt: cursor.id } }],
  }
}

export const NEWEST_FIRST = [{ createdAt: 'desc' as const }, { id: 'desc' as const }]

export const OLDEST_FIRST = [{ createdAt: 'asc' as const }, { id: 'asc' as const }]

export function toList<T, W>(rows: T[], limit: number, present: (row: T) => W) {
  return { object: 'list' as const, data: rows.slice(0, limit).map(present), has_more: rows.length > limit }
}

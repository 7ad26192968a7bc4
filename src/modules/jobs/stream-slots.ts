// Live event streams are long-lived sockets plus a database read every couple of seconds each, so one key
// (MAX_STREAMS_PER_KEY) and one project (MAX_STREAMS_PER_PROJECT) may hold only so many. They are counted
// in Redis with the project slots the workers use (src/queue/project-slots.ts): every API process sees the
// same counts, and the slots of a process that dies expire on their own.
import { randomUUID } from 'node:crypto'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { AppError } from '../../errors.js'
import { type SlotHandle, slotKey, takeSlot } from '../../queue/project-slots.js'

/** Seconds a refused client is asked to wait: streams end when their job does or their client leaves. */
export const STREAMS_RETRY_AFTER_S = 30

/** Takes a stream slot of the caller's key and of its project, or throws 429 `too_many_streams`. */
export async function takeStreamSlots(app: FastifyInstance, req: FastifyRequest): Promise<SlotHandle> {
  const { queuePrefix, maxStreamsPerKey, maxStreamsPerProject } = app.config
  const holder = `${req.id}:${randomUUID()}`
  const refuse = (what: string, cap: number) =>
    new AppError(
      'too_many_streams',
      `${what} already has ${cap} event streams open (${what === 'This API key' ? 'MAX_STREAMS_PER_KEY' : 'MAX_STREAMS_PER_PROJECT'}); close one or retry later.`,
      { headers: { 'retry-after': String(STREAMS_RETRY_AFTER_S) } },
    )
  const perKey = await takeSlot(app.redis, slotKey(queuePrefix, 'streams-key', req.apiKeyId), holder, maxStreamsPerKey)
  if (!perKey) throw refuse('This API key', maxStreamsPerKey)
  const perProject = await takeSlot(
    app.redis,
    slotKey(queuePrefix, 'streams-project', req.projectId),
    holder,
    maxStreamsPerProject,
  ).catch(async (err) => {
    await perKey.release()
    throw err
  })
  if (!perProject) {
    await perKey.release()
    throw refuse('This project', maxStreamsPerProject)
  }
  return {
    async release() {
      await Promise.all([perKey.release(), perProject.release()])
    },
  }
}

// The job state machine as data: every status change a fine-tuning job can make, written once. The
// lifecycle module (lifecycle.ts) refuses any change not listed here, the README's diagram is checked
// against this table by a test, and adding a transition (pause/resume, say) is one entry here plus one
// function in lifecycle.ts that calls `apply`.
import type { JobStatus } from '../../../generated/prisma/client.js'

export type { JobStatus }

/** Statuses a job never leaves. */
export const TERMINAL = ['succeeded', 'failed', 'cancelled'] as const satisfies readonly JobStatus[]
export type TerminalStatus = (typeof TERMINAL)[number]

export const isTerminal = (s: string): s is TerminalStatus => (TERMINAL as readonly string[]).includes(s)

export interface TransitionSpec {
  /** statuses the job may be in; `null` is "no row yet" (creation) */
  readonly from: readonly (JobStatus | null)[]
  /** statuses the job may end in */
  readonly to: readonly JobStatus[]
  /**
   * Fenced transitions are made by the worker that owns the job's current attempt: a worker whose
   * attempt is no longer the job's current one is refused (it lost the job to another worker).
   */
  readonly fenced: boolean
  /** which process makes it */
  readonly by: 'api' | 'worker' | 'api or worker'
  /** one line for the docs */
  readonly why: string
}

export const TRANSITIONS = {
  create: {
    from: [null],
    to: ['validating_files', 'queued'],
    fenced: false,
    by: 'api',
    why: 'POST /v1/fine_tuning/jobs (or retry); queued at once when its files are validated',
  },
  promote: {
    from: ['validating_files'],
    to: ['queued'],
    fenced: false,
    by: 'worker',
    why: 'its files passed validation: hyperparameters resolved, job enqueued',
  },
  reject: {
    from: ['validating_files'],
    to: ['failed'],
    fenced: false,
    by: 'worker',
    why: 'a file failed validation or does not fit the model',
  },
  claim: {
    from: ['queued', 'running'],
    to: ['running'],
    fenced: false,
    by: 'worker',
    why: 'a worker takes the job (from running: takeover of a lost worker, next attempt)',
  },
  hand_back: {
    from: ['running'],
    to: ['queued'],
    fenced: true,
    by: 'worker',
    why: 'the worker shuts down: back to the queue, attempt given back, resumes from its checkpoint',
  },
  request_cancel: {
    from: ['running'],
    to: ['cancelling'],
    fenced: false,
    by: 'api',
    why: 'cancel of a running job: it stops at the end of its batch',
  },
  cancel: {
    from: ['validating_files', 'queued', 'paused'],
    to: ['cancelled'],
    fenced: false,
    by: 'api',
    why: 'cancel of a job that has not started, or is paused: it leaves the queue at once',
  },
  finish_cancel: {
    from: ['running', 'cancelling'],
    to: ['cancelled'],
    fenced: true,
    by: 'worker',
    why: 'the training process stopped after a cancel',
  },
  succeed: {
    from: ['running', 'cancelling'],
    to: ['succeeded'],
    fenced: true,
    by: 'worker',
    why: 'training finished: the fine-tuned model is registered in the same transaction',
  },
  fail: {
    from: ['running', 'cancelling'],
    to: ['failed'],
    fenced: true,
    by: 'worker',
    why: 'training failed (job error.code says why)',
  },
  pause: {
    from: ['validating_files', 'queued'],
    to: ['paused'],
    fenced: false,
    by: 'api',
    why: 'pause of a job that has not started: it leaves the queue at once',
  },
  request_pause: {
    from: ['running'],
    to: ['running'],
    fenced: false,
    by: 'api',
    why: 'pause of a running job: status_reason "pausing" until its mid-epoch checkpoint is written',
  },
  finish_pause: {
    from: ['running'],
    to: ['paused'],
    fenced: true,
    by: 'worker',
    why: 'the training process wrote its mid-epoch checkpoint and exited',
  },
  resume: {
    from: ['paused'],
    to: ['queued', 'validating_files'],
    fenced: false,
    by: 'api',
    why: 'queued again, to continue from its last checkpoint (back to validating_files if paused there)',
  },
  flag_unserved: {
    from: ['queued'],
    to: ['queued'],
    fenced: false,
    by: 'api',
    why: 'no live worker of its resource class: status_reason says so',
  },
  clear_unserved: {
    from: ['queued'],
    to: ['queued'],
    fenced: false,
    by: 'api',
    why: 'a worker of its resource class is back',
  },
} as const satisfies Record<string, TransitionSpec>

export type TransitionName = keyof typeof TRANSITIONS

/** Whether `name` may move a job from `from` to `to`. */
export function allowed(name: TransitionName, from: JobStatus | null, to: JobStatus): boolean {
  const t: TransitionSpec = TRANSITIONS[name]
  return t.from.includes(from) && t.to.includes(to)
}

/** Every (from, to) edge of the table, self-loops included, for docs and tests. */
export function edges(): { from: JobStatus | null; to: JobStatus; name: TransitionName }[] {
  const out: { from: JobStatus | null; to: JobStatus; name: TransitionName }[] = []
  for (const [name, t] of Object.entries(TRANSITIONS) as [TransitionName, TransitionSpec][])
    for (const from of t.from) for (const to of t.to) out.push({ from, to, name })
  return out
}

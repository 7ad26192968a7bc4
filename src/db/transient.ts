// Errors that mean "a backing service is unreachable right now" (PostgreSQL restarting, Redis down):
// the API answers 503 for them, and the worker waits and retries instead of losing a write.
const TRANSIENT = [
  /ECONNREFUSED/,
  /ECONNRESET/,
  /EPIPE/,
  /Connection is closed/,
  /enableOfflineQueue/,
  /Can't reach database server/,
  /Connection terminated/,
  /connection.*(closed|terminated|ended)/i,
  /ETIMEDOUT/,
  /the database system is (starting up|shutting down|in recovery mode)/,
  /terminating connection due to administrator command/,
  /DatabaseNotReachable/,
  /Client has encountered a connection error/,
  /timeout exceeded when trying to connect/,
]

export function isTransientError(err: unknown): boolean {
  const e = err as { message?: string; code?: string; cause?: { message?: string; code?: string } }
  const text = `${e?.message ?? ''} ${e?.code ?? ''} ${e?.cause?.message ?? ''} ${e?.cause?.code ?? ''}`
  // 57P01 admin shutdown, 57P03 cannot connect now, 08xxx connection exceptions
  if (/^(57P0[13]|08\d{3})$/.test(e?.code ?? '') || /^(57P0[13]|08\d{3})$/.test(e?.cause?.code ?? '')) return true
  return TRANSIENT.some((re) => re.test(text))
}

/** Runs `fn`, retrying transient failures every `everyMs` until `timeoutMs` has passed. */
export async function retryTransient<T>(
  fn: () => Promise<T>,
  opts: { timeoutMs?: number; everyMs?: number; onRetry?: (err: unknown) => void } = {},
): Promise<T> {
  const end = Date.now() + (opts.timeoutMs ?? 120_000)
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (!isTransientError(err) || Date.now() > end) throw err
      opts.onRetry?.(err)
      await new Promise((r) => setTimeout(r, opts.everyMs ?? 500))
    }
  }
}

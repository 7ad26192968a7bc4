// Text that PostgreSQL cannot store (NUL) or that is not Unicode at all (an unpaired UTF-16 surrogate,
// which JSON's \uD800 escapes can carry) is refused where it enters, as a 400, instead of failing as a
// 500 at the first INSERT or being stored and breaking every later reader.

// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

/** True when `s` holds a NUL character or a lone surrogate. */
export function hasUnsafeText(s: string): boolean {
  return s.includes('\u0000') || LONE_SURROGATE.test(s)
}

/** What is wrong with a value, as the path to the first offending string or number; null when clean. */
export function findUnsafeValue(value: unknown, path = ''): { path: string; problem: string } | null {
  if (typeof value === 'string')
    return hasUnsafeText(value) ? { path, problem: 'holds a NUL character or an unpaired UTF-16 surrogate' } : null
  if (typeof value === 'number') return Number.isFinite(value) ? null : { path, problem: 'is not a finite number' }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = findUnsafeValue(value[i], `${path}[${i}]`)
      if (bad) return bad
    }
    return null
  }
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (hasUnsafeText(k))
        return { path: path ? `${path}.${k}` : k, problem: 'is a key holding a NUL or unpaired surrogate' }
      const bad = findUnsafeValue(v, path ? `${path}.${k}` : k)
      if (bad) return bad
    }
  }
  return null
}

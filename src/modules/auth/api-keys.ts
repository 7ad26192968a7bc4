import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

// Key format: `rk-<prefix>.<secret>`. The prefix (12 base36 chars) is stored in clear for lookup,
// the whole key only as sha256, compared in constant time.
const KEY_RE = /^rk-([a-z0-9]{12})\.([A-Za-z0-9_-]{32,64})$/

export interface NewApiKey {
  key: string
  prefix: string
  secretHash: string
}

export function generateApiKey(): NewApiKey {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'
  const prefix = Array.from(randomBytes(12), (b) => alphabet[b % 36]).join('')
  const key = `rk-${prefix}.${randomBytes(32).toString('base64url')}`
  return { key, prefix, secretHash: hashKey(key) }
}

export const hashKey = (key: string) => createHash('sha256').update(key).digest('hex')

export function parseKeyPrefix(token: string): string | null {
  return KEY_RE.exec(token)?.[1] ?? null
}

export function keyMatches(token: string, secretHash: string): boolean {
  const a = Buffer.from(hashKey(token), 'hex')
  const b = Buffer.from(secretHash, 'hex')
  return a.length === b.length && timingSafeEqual(a, b)
}

export function tokenEquals(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest()
  const hb = createHash('sha256').update(b).digest()
  return timingSafeEqual(ha, hb)
}

// Webhook URLs must not reach the inside of the network Refit runs in (SSRF). Two checks, one rule:
//
// 1. At `POST /v1/webhooks` the URL's host is classified, after resolving it, and refused unless every
//    address is public unicast (`assertPublicWebhookUrl`).
// 2. At send time the resolved address is checked again inside the socket's own `lookup`, so the address
//    that is checked is the address that is connected to: a name that answered a public address at
//    registration and 127.0.0.1 now (DNS rebinding) gets no connection (`sendWebhook`).
//
// The rule is an allow-list, not a deny-list: only ipaddr.js's `unicast` range passes (IPv4 and IPv6),
// so loopback, RFC 1918, CGNAT, link-local (169.254.169.254), ULA, unspecified, multicast, broadcast,
// reserved/documentation ranges and every IPv6 form that embeds an IPv4 address (mapped ::ffff:0:0/96,
// compatible ::/96, NAT64 64:ff9b::/96, 6to4, Teredo) are refused, as are ranges ipaddr.js adds later.
// Spellings (decimal 2130706433, hex, octal, short 127.1, [::ffff:127.0.0.1], trailing dots) are
// canonicalized by the WHATWG URL parser before classification, and names are resolved, so no spelling
// reaches the network unclassified.
//
// `sendWebhook` is the only way a delivery leaves the worker: one POST, a fresh connection (no agent, so
// no socket picked for an earlier address), redirects never followed, a timer that destroys the request
// when it fires (a plain setTimeout held by the event loop: `AbortSignal.timeout` combined through
// `AbortSignal.any` was seen never firing on Node 20 after GC), and a result that carries the status
// code, timing and an error class, never the response body.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import http from 'node:http'
import https from 'node:https'
import { isIP } from 'node:net'
import ipaddr from 'ipaddr.js'
import { AppError } from '../../errors.js'

/** Resolves a host name to all its addresses; injectable so tests can play a rebinding DNS server. */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>

/** The system resolver (getaddrinfo: /etc/hosts, then DNS), every address, in the resolver's order. */
export const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) =>
    dnsLookup(hostname, { all: true, verbatim: true }, (err, addresses) => (err ? reject(err) : resolve(addresses))),
  )

const IPV4_COMPATIBLE = ipaddr.IPv6.parse('::')

/** True only for public unicast addresses; anything unparsable is not public. */
export function isPublicAddress(address: string): boolean {
  const literal = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '')
  if (!ipaddr.isValid(literal)) return false
  const parsed = ipaddr.parse(literal)
  if (parsed.kind() === 'ipv4') return parsed.range() === 'unicast'
  const v6 = parsed as ipaddr.IPv6
  // ::a.b.c.d (deprecated "IPv4-compatible") is classified `unicast` by ipaddr.js; it reaches IPv4 hosts.
  if (v6.match(IPV4_COMPATIBLE, 96)) return false
  if (v6.isIPv4MappedAddress()) return isPublicAddress(v6.toIPv4Address().toString())
  return v6.range() === 'unicast'
}

/** Names that are loopback by definition (RFC 6761), whatever a resolver says. */
function isLocalName(host: string): boolean {
  const h = host.replace(/\.+$/, '').toLowerCase()
  return h === 'localhost' || h.endsWith('.localhost') || h === ''
}

/** The host of a URL as the socket sees it: brackets of an IPv6 literal removed. */
function bareHost(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '')
}

export interface AddressPolicy {
  /** WEBHOOK_ALLOW_PRIVATE: no address checks at all (closed networks, tests) */
  allowPrivate: boolean
  resolve?: Resolver
}

/** Why an address was refused: the error class a delivery records, and the message a user reads. */
export class ForbiddenAddressError extends Error {
  readonly code = 'EFORBIDDENADDRESS'
  constructor(
    readonly host: string,
    readonly address: string,
  ) {
    super(
      address === host
        ? `${host} is not a public address`
        : `${host} resolves to ${address}, which is not a public address`,
    )
  }
}

/** Resolves `host` (unless it is a literal) and throws ForbiddenAddressError unless every address is public. */
async function publicAddresses(host: string, resolve: Resolver): Promise<LookupAddress[]> {
  if (isIP(host)) {
    if (!isPublicAddress(host)) throw new ForbiddenAddressError(host, host)
    return [{ address: host, family: isIP(host) }]
  }
  if (isLocalName(host)) throw new ForbiddenAddressError(host, 'localhost')
  const addresses = await resolve(host)
  if (!addresses.length) throw Object.assign(new Error(`${host} has no address`), { code: 'ENOTFOUND' })
  const bad = addresses.find((a) => !isPublicAddress(a.address))
  if (bad) throw new ForbiddenAddressError(host, bad.address)
  return addresses
}

/** How long registration waits for DNS before refusing the URL as unresolvable. */
const REGISTRATION_DNS_TIMEOUT_MS = 3_000

/**
 * Refuses (400 `webhook_url_forbidden`) a URL whose host is, or resolves to, anything but public unicast
 * addresses, and (400 `invalid_webhook_url`) one whose host does not resolve: a URL that cannot be
 * classified is not accepted. The send-time check still runs: this one only answers early.
 */
export async function assertPublicWebhookUrl(url: URL, policy: AddressPolicy): Promise<void> {
  if (policy.allowPrivate) return
  const host = bareHost(url)
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error('DNS lookup timed out'), { code: 'ETIMEOUT' })),
      REGISTRATION_DNS_TIMEOUT_MS,
    )
  })
  try {
    await Promise.race([publicAddresses(host, policy.resolve ?? systemResolver), deadline])
  } catch (err) {
    if (err instanceof ForbiddenAddressError)
      throw new AppError(
        'webhook_url_forbidden',
        `url must point to a public address: ${err.message}. Private, loopback, link-local and other internal addresses are refused (an operator can allow them with WEBHOOK_ALLOW_PRIVATE=true).`,
        { param: 'url' },
      )
    throw new AppError(
      'invalid_webhook_url',
      `url's host ${host} could not be resolved (${(err as NodeJS.ErrnoException).code ?? 'error'}); use a host name that resolves.`,
      { param: 'url' },
    )
  } finally {
    clearTimeout(timer)
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/** A `lookup` for net/tls sockets that refuses non-public answers: the check sits where the connect happens. */
function guardedLookup(policy: AddressPolicy) {
  const resolve = policy.resolve ?? systemResolver
  return (hostname: string, options: { family?: number | string; all?: boolean }, callback: LookupCallback) => {
    const check = policy.allowPrivate
      ? resolve(hostname).then((a) => {
          if (!a.length) throw Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' })
          return a
        })
      : publicAddresses(hostname, resolve)
    check.then(
      (addresses) => {
        const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : Number(options.family) || 0
        const usable = family ? addresses.filter((a) => a.family === family) : addresses
        if (!usable.length)
          return callback(
            Object.assign(new Error(`${hostname} has no IPv${family} address`), { code: 'ENOTFOUND' }),
            '',
          )
        if (options.all) callback(null, usable)
        else callback(null, usable[0].address, usable[0].family)
      },
      (err: NodeJS.ErrnoException) => callback(err, ''),
    )
  }
}

/** What a delivery log keeps of one attempt: never the response body. */
export interface DeliveryResult {
  ok: boolean
  /** HTTP status, null when no answer came */
  status: number | null
  /** from the start of the attempt to the answer's headers (or the failure) */
  durationMs: number
  /** null when delivered; else a stable class: see `classify` */
  errorClass: DeliveryErrorClass | null
  /** a one-line description without the body, for last_error and logs */
  error: string | null
}

export type DeliveryErrorClass =
  | 'http_status'
  | 'redirect'
  | 'timeout'
  | 'forbidden_address'
  | 'dns_error'
  | 'connection_refused'
  | 'connection_reset'
  | 'tls_error'
  | 'invalid_url'
  | 'cancelled'
  | 'network_error'

function classify(err: NodeJS.ErrnoException): DeliveryErrorClass {
  const code = err.code ?? ''
  if (err instanceof ForbiddenAddressError) return 'forbidden_address'
  if (['ENOTFOUND', 'EAI_AGAIN', 'ENODATA', 'ESERVFAIL', 'ETIMEOUT'].includes(code)) return 'dns_error'
  if (code === 'ECONNREFUSED') return 'connection_refused'
  if (['ECONNRESET', 'EPIPE', 'ECONNABORTED'].includes(code)) return 'connection_reset'
  if (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || /CERT|SSL|TLS/.test(code)) return 'tls_error'
  return 'network_error'
}

export interface DeliveryRequest {
  url: string
  headers: Record<string, string>
  body: string
  /** the whole attempt (DNS, connect, TLS, request, response headers) ends by then */
  timeoutMs: number
  policy: AddressPolicy
  /** aborts the attempt early (worker shutdown) */
  signal?: AbortSignal
}

/** POSTs one delivery; never throws, never follows a redirect, never reads the response body. */
export function sendWebhook(req: DeliveryRequest): Promise<DeliveryResult> {
  const started = performance.now()
  const elapsed = () => Math.round(performance.now() - started)
  return new Promise<DeliveryResult>((resolve) => {
    let settled = false
    let request: http.ClientRequest | null = null
    const controller = new AbortController()
    const finish = (result: Omit<DeliveryResult, 'durationMs'>) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      req.signal?.removeEventListener('abort', onCancel)
      controller.abort()
      request?.destroy()
      resolve({ ...result, durationMs: elapsed() })
    }
    const fail = (errorClass: DeliveryErrorClass, error: string, status: number | null = null) =>
      finish({ ok: false, status, errorClass, error })
    // The deadline is an ordinary timer: it keeps the event loop's reference, so it fires.
    const timer = setTimeout(() => fail('timeout', `no answer within ${req.timeoutMs} ms`), req.timeoutMs)
    const onCancel = () => fail('cancelled', 'delivery cancelled (worker shutting down)')
    if (req.signal?.aborted) return onCancel()
    req.signal?.addEventListener('abort', onCancel, { once: true })

    let url: URL
    try {
      url = new URL(req.url)
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`protocol ${url.protocol}`)
    } catch (err) {
      return fail('invalid_url', `invalid url: ${(err as Error).message}`)
    }
    const host = bareHost(url)
    // A literal address never goes through `lookup`: check it here.
    if (isIP(host) && !req.policy.allowPrivate && !isPublicAddress(host))
      return fail('forbidden_address', new ForbiddenAddressError(host, host).message)

    const client = url.protocol === 'https:' ? https : http
    try {
      request = client.request(url, {
        method: 'POST',
        headers: { ...req.headers, 'content-length': String(Buffer.byteLength(req.body)) },
        // A fresh socket per attempt: a pooled one may be connected to an address checked long ago.
        agent: false,
        lookup: guardedLookup(req.policy) as unknown as typeof dnsLookup,
        signal: controller.signal,
      })
    } catch (err) {
      return fail('invalid_url', (err as Error).message)
    }
    request.on('response', (res) => {
      const status = res.statusCode ?? 0
      // The body is never read: the log keeps the status only.
      res.destroy()
      if (status >= 200 && status < 300) return finish({ ok: true, status, errorClass: null, error: null })
      if (status >= 300 && status < 400) return fail('redirect', `HTTP ${status} (redirects are not followed)`, status)
      fail('http_status', `HTTP ${status}`, status)
    })
    request.on('error', (err: NodeJS.ErrnoException) => {
      const errorClass = classify(err)
      fail(errorClass, errorClass === 'forbidden_address' ? err.message : `${err.code ?? err.name}: ${err.message}`)
    })
    request.end(req.body)
  })
}

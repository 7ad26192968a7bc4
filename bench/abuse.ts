// Abuse benchmark (issue 13): starts the real service (API + worker processes, as `npm start` does), replays
// the black-box probe's attacks one after another and prints, per attack, what the service answered, the
// peak resident set of the API and worker processes while it ran, and the p99 of `/healthz` (polled every
// 100 ms from another connection) meanwhile. Writes bench/results/abuse.json. Figures, not assertions.
//
//   npm run bench:abuse               (builds dist/, then about 2 minutes)
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import yazl from 'yazl'
import { saveModel } from '../src/engine/model-io.js'
import { ADMIN_TOKEN, createTestEnv } from '../test/helpers/env.js'
import { solidPng } from '../test/helpers/memory-fixtures.js'
import { httpClient, startService } from '../test/helpers/service.js'
import { writeResult } from './common.js'

const require = createRequire(import.meta.url)
const tf: typeof import('@tensorflow/tfjs-node') = require('@tensorflow/tfjs-node')

interface Row {
  attack: string
  answer: string
  api_peak_rss_mib: number
  worker_peak_rss_mib: number
  healthz_p99_ms: number
  healthz_failures: number
}

const env = await createTestEnv('bench_abuse', {
  LOG_LEVEL: 'error',
  REQUEST_TIMEOUT_MS: '3000',
  MIN_UPLOAD_BYTES_PER_SEC: '1024',
  UPLOAD_RATE_WINDOW_MS: '3000',
  MAX_CONNECTIONS: '300',
  // the heavy prediction below is estimated (every layer's activations summed) past the 2 GiB default
  INFERENCE_MEMORY_BYTES: String(8 * 1024 ** 3),
  INFERENCE_PROCESSES: '1',
})
const service = await startService(env.env)
const base = service.url
const port = Number(new URL(base).port)
const apiPid = service.child.pid!
const workerPid = Number(/worker pid (\d+)/.exec(service.output())?.[1] ?? 0)
const admin = httpClient(base, ADMIN_TOKEN)
const rows: Row[] = []
const work = await mkdtemp(join(tmpdir(), 'refit-abuse-'))

const rssMib = (pid: number) => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

/** Runs `attack` while sampling RSS and polling /healthz; records its answer line. */
async function run(name: string, attack: () => Promise<string>) {
  let stop = false
  let apiPeak = rssMib(apiPid)
  let workerPeak = rssMib(workerPid)
  const latencies: number[] = []
  let failures = 0
  const sampler = setInterval(() => {
    apiPeak = Math.max(apiPeak, rssMib(apiPid))
    workerPeak = Math.max(workerPeak, rssMib(workerPid))
  }, 100)
  const poller = (async () => {
    while (!stop) {
      const t = performance.now()
      try {
        const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(10_000) })
        await r.arrayBuffer()
        if (r.ok) latencies.push(performance.now() - t)
        else failures++
      } catch {
        failures++
      }
      await new Promise((r) => setTimeout(r, 100))
    }
  })()
  let answer: string
  try {
    answer = await attack()
  } catch (err) {
    answer = `bench error: ${(err as Error).message}`
  }
  stop = true
  await poller
  clearInterval(sampler)
  latencies.sort((a, b) => a - b)
  const p99 = latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] : NaN
  const row = {
    attack: name,
    answer,
    api_peak_rss_mib: Math.round(apiPeak),
    worker_peak_rss_mib: Math.round(workerPeak),
    healthz_p99_ms: Math.round(p99 * 10) / 10,
    healthz_failures: failures,
  }
  rows.push(row)
  console.log(
    `${name}: ${answer} (API ${row.api_peak_rss_mib} MiB, worker ${row.worker_peak_rss_mib} MiB, healthz p99 ${row.healthz_p99_ms} ms)`,
  )
}

const tally = (codes: (number | string)[]) => {
  const m = new Map<string, number>()
  for (const c of codes) m.set(String(c), (m.get(String(c)) ?? 0) + 1)
  return [...m].map(([k, v]) => `${v}x ${k}`).join(', ')
}

async function projectWithKey(name: string, limits?: object) {
  const p = await admin.post('/v1/admin/projects', { name })
  const k = await admin.post(`/v1/admin/projects/${p.body.id}/api_keys`, { name: 'k' })
  if (limits) await fetchJson(`/v1/admin/projects/${p.body.id}/limits`, ADMIN_TOKEN, 'PATCH', limits)
  return { projectId: p.body.id as string, key: k.body.key as string }
}

async function fetchJson(path: string, token: string, method = 'GET', body?: unknown) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await r.text()
  let json: any = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: r.status, json, bytes: text.length }
}

function multipartBody(fields: Record<string, string>, file: { name: string; content: Buffer }) {
  const b = `----abuse${Math.random().toString(16).slice(2)}`
  const parts: Buffer[] = []
  for (const [k, v] of Object.entries(fields))
    parts.push(Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`))
  parts.push(
    Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="file"; filename="${file.name}"\r\n\r\n`),
    file.content,
    Buffer.from(`\r\n--${b}--\r\n`),
  )
  return { body: Buffer.concat(parts), type: `multipart/form-data; boundary=${b}` }
}

async function upload(
  path: string,
  key: string,
  fields: Record<string, string>,
  file: { name: string; content: Buffer },
) {
  const m = multipartBody(fields, file)
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': m.type },
    body: m.body,
  })
  const json = await r.json().catch(() => null)
  return { status: r.status, json }
}

const csv = (rows: number, labels: (i: number) => string) => {
  let s = 'x,y,label\n'
  for (let i = 0; i < rows; i++) s += `${i},${i % 7},${labels(i)}\n`
  return Buffer.from(s)
}

try {
  const a = await projectWithKey('attacker')

  await run('webhook SSRF (8 spellings of loopback/metadata)', async () => {
    const urls = [
      'http://127.0.0.1/',
      'http://2130706433/',
      'http://0x7f000001/',
      'http://0177.0.0.1/',
      'http://127.1/',
      'http://[::ffff:127.0.0.1]/',
      'http://169.254.169.254/latest/meta-data/',
      'http://localhost./',
    ]
    const res = await Promise.all(urls.map((url) => fetchJson('/v1/webhooks', a.key, 'POST', { url })))
    return tally(res.map((r) => `${r.status} ${r.json?.error?.code ?? ''}`.trim()))
  })

  await run('poison input (NUL, lone surrogate, NaN-like, truncated multipart)', async () => {
    // each request on its own: a connection the server closes is an answer too, not a bench failure
    const settle = (p: Promise<{ status: number; json: any }>) =>
      p.catch((err: Error) => ({ status: `connection closed (${err.message})`, json: null }))
    const res = await Promise.all([
      settle(fetchJson('/v1/fine_tuning/jobs', a.key, 'POST', '{"model":"mlp-small","training_file":"file-\\u0000"}')),
      settle(fetchJson('/v1/fine_tuning/jobs', a.key, 'POST', '{"model":"mlp-small\\ud800","training_file":"x"}')),
      settle(
        fetchJson('/v1/fine_tuning/jobs', a.key, 'POST', '{"model":"mlp-small","training_file":"x","seed":1e999}'),
      ),
      settle(
        (async () => {
          const m = multipartBody({ purpose: 'fine-tune' }, { name: 'a.csv', content: csv(10, () => 'a') })
          const r = await fetch(`${base}/v1/files`, {
            method: 'POST',
            headers: { authorization: `Bearer ${a.key}`, 'content-type': m.type },
            body: m.body.subarray(0, m.body.length - 20),
          })
          return { status: r.status, json: await r.json().catch(() => null) }
        })(),
      ),
    ])
    return tally(res.map((r) => `${r.status} ${r.json?.error?.code ?? ''}`.trim()))
  })

  await run('label bomb (CSV with 200,000 distinct labels)', async () => {
    const f = await upload(
      '/v1/files',
      a.key,
      { purpose: 'fine-tune' },
      {
        name: 'labels.csv',
        content: csv(200_000, (i) => `label${i}`),
      },
    )
    if (f.status !== 201) return `upload ${f.status} ${f.json?.error?.code}`
    let file: any
    for (let i = 0; i < 600; i++) {
      file = (await fetchJson(`/v1/files/${f.json.id}`, a.key)).json
      if (file.status !== 'uploaded') break
      await new Promise((r) => setTimeout(r, 200))
    }
    const list = await fetchJson('/v1/files', a.key)
    return `file ${file.status} ${file.error?.code ?? ''}; GET /v1/files ${list.bytes} bytes`
  })

  await run('upload flood past the quota (30 x 20 KB at once, quota 100 KB)', async () => {
    const p = await projectWithKey('flood', { storage_quota_bytes: 100_000 })
    const content = csv(2000, (i) => (i % 2 ? 'a' : 'b'))
    const res = await Promise.all(
      Array.from({ length: 30 }, () =>
        upload('/v1/files', p.key, { purpose: 'fine-tune' }, { name: 'd.csv', content }),
      ),
    )
    const usage = await fetchJson(`/v1/admin/projects/${p.projectId}/usage`, ADMIN_TOKEN)
    return `${tally(res.map((r) => r.status))}; stored ${usage.json.storage_used_bytes} of 100000 bytes`
  })

  await run('job create race (20 at once, max_concurrent_jobs 1)', async () => {
    const p = await projectWithKey('race', { max_concurrent_jobs: 1 })
    const f = await upload(
      '/v1/files',
      p.key,
      { purpose: 'fine-tune' },
      { name: 'd.csv', content: csv(100, (i) => (i % 2 ? 'a' : 'b')) },
    )
    const res = await Promise.all(
      Array.from({ length: 20 }, () =>
        fetchJson('/v1/fine_tuning/jobs', p.key, 'POST', {
          model: 'mlp-small',
          training_file: f.json.id,
          method: { type: 'supervised' },
        }),
      ),
    )
    return tally(res.map((r) => r.status))
  })

  await run('SSE stream flood (30 streams, one key)', async () => {
    const p = await projectWithKey('streams')
    const f = await upload(
      '/v1/files',
      p.key,
      { purpose: 'fine-tune' },
      { name: 'd.csv', content: csv(100, (i) => (i % 2 ? 'a' : 'b')) },
    )
    const job = await fetchJson('/v1/fine_tuning/jobs', p.key, 'POST', {
      model: 'mlp-small',
      training_file: f.json.id,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 50 } } },
    })
    const ctl = new AbortController()
    const res = await Promise.all(
      Array.from({ length: 30 }, () =>
        fetch(`${base}/v1/fine_tuning/jobs/${job.json.id}/events?stream=true`, {
          headers: { authorization: `Bearer ${p.key}` },
          signal: ctl.signal,
        }).then(
          (r) => r.status,
          () => 'error',
        ),
      ),
    )
    await new Promise((r) => setTimeout(r, 2000))
    ctl.abort()
    await fetchJson(`/v1/fine_tuning/jobs/${job.json.id}/cancel`, p.key, 'POST')
    return tally(res)
  })

  await run('revoked key (10 open streams on a running job)', async () => {
    const p = await projectWithKey('revoke')
    const second = await admin.post(`/v1/admin/projects/${p.projectId}/api_keys`, { name: 'streams' })
    const f = await upload(
      '/v1/files',
      p.key,
      { purpose: 'fine-tune' },
      { name: 'd.csv', content: csv(100, (i) => (i % 2 ? 'a' : 'b')) },
    )
    const job = await fetchJson('/v1/fine_tuning/jobs', p.key, 'POST', {
      model: 'mlp-small',
      training_file: f.json.id,
      method: { type: 'supervised', supervised: { hyperparameters: { n_epochs: 50 } } },
    })
    const ended = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const r = await fetch(`${base}/v1/fine_tuning/jobs/${job.json.id}/events?stream=true`, {
          headers: { authorization: `Bearer ${second.body.key}` },
        })
        const reader = r.body!.getReader()
        await reader.read()
        // wrapped: an async function returning the promise itself would wait for the stream's end
        return {
          done: (async () => {
            while (!(await reader.read()).done) {}
            return performance.now()
          })(),
        }
      }),
    )
    const t = performance.now()
    await fetchJson(`/v1/admin/projects/${p.projectId}/api_keys/${second.body.id}`, ADMIN_TOKEN, 'DELETE')
    const answered = performance.now()
    const closed = await Promise.race([
      Promise.all(ended.map((e) => e.done)),
      new Promise<null>((r) => setTimeout(r, 20_000, null)),
    ])
    await fetchJson(`/v1/fine_tuning/jobs/${job.json.id}/cancel`, p.key, 'POST')
    if (!closed) return 'streams still open 20 s after the revoke'
    const last = Math.max(...closed)
    return `10/10 streams closed ${(last - answered).toFixed(0)} ms after the revoke answered (${(last - t).toFixed(0)} ms after it was sent)`
  })

  await run('slowloris (100 bodies at ~10 B/s)', async () => {
    const started = Date.now()
    const sockets: Socket[] = []
    const closedAt: number[] = []
    for (let i = 0; i < 100; i++) {
      const s = connect(port, '127.0.0.1')
      s.on('error', () => {})
      s.on('close', () => closedAt.push(Date.now() - started))
      s.write(
        `POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${a.key}\r\n` +
          'Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n--b\r\n',
      )
      sockets.push(s)
    }
    const trickle = setInterval(() => {
      for (const s of sockets) if (!s.destroyed) s.write('0123456789')
    }, 1000)
    const deadline = Date.now() + 30_000
    while (closedAt.length < sockets.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200))
    clearInterval(trickle)
    for (const s of sockets) s.destroy()
    closedAt.sort((x, y) => x - y)
    return `${closedAt.length}/100 cut by the server, the last after ${(closedAt.at(-1)! / 1000).toFixed(1)} s`
  })

  await run('connection flood (400 idle sockets, MAX_CONNECTIONS 300)', async () => {
    const sockets: Socket[] = []
    let closed = 0
    await Promise.all(
      Array.from(
        { length: 400 },
        () =>
          new Promise<void>((resolve) => {
            const s = connect(port, '127.0.0.1', () => resolve())
            s.on('error', () => resolve())
            s.on('close', () => closed++)
            sockets.push(s)
          }),
      ),
    )
    await new Promise((r) => setTimeout(r, 2000))
    const refused = closed
    for (const s of sockets) s.destroy()
    return `${refused} of 400 closed at accept`
  })

  await run('admin sign-in brute force (12 wrong tokens)', async () => {
    const res: number[] = []
    for (let i = 0; i < 12; i++) {
      const r = await fetch(`${base}/admin/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', origin: base },
        body: JSON.stringify({ token: `wrong-${i}-0123456789abcdef` }),
      })
      await r.arrayBuffer()
      res.push(r.status)
    }
    return tally(res)
  })

  await run('slow prediction (16 conv layers at 384x384, 2 images; REQUEST_TIMEOUT_MS 3000)', async () => {
    const layers: import('@tensorflow/tfjs-node').layers.Layer[] = []
    for (let i = 0; i < 16; i++)
      layers.push(
        tf.layers.conv2d({
          ...(i === 0 ? { inputShape: [384, 384, 3] } : {}),
          filters: 64,
          kernelSize: 3,
          padding: 'same',
          activation: 'relu',
        }),
      )
    layers.push(tf.layers.globalAveragePooling2d({}), tf.layers.dense({ units: 2, activation: 'softmax' }))
    const model = tf.sequential({ layers })
    const dir = join(work, 'heavy')
    await saveModel(tf as never, model as never, dir)
    model.dispose()
    const zip = new yazl.ZipFile()
    for (const f of ['model.json', 'weights.bin']) zip.addFile(join(dir, f), f)
    zip.end()
    const chunks: Buffer[] = []
    for await (const c of zip.outputStream) chunks.push(c as Buffer)
    const m = await upload(
      '/v1/models',
      a.key,
      { input_shape: '[384,384,3]', classes: '["a","b"]' },
      { name: 'm.zip', content: Buffer.concat(chunks) },
    )
    if (m.status !== 201) return `model upload ${m.status} ${m.json?.error?.code}`
    const png = (await solidPng(8, 8, 128)).toString('base64')
    const r = await fetchJson(`/v1/models/${encodeURIComponent(m.json.id)}/predictions`, a.key, 'POST', {
      inputs: [{ image: png }, { image: png }],
    })
    return `${r.status} ${r.json?.error?.code ?? ''}`
  })
} finally {
  await service.stop()
  await env.cleanup()
  await rm(work, { recursive: true, force: true })
}

console.log('\n| attack | answer | API peak RSS MiB | worker peak RSS MiB | /healthz p99 ms (failures) |')
console.log('|---|---|---|---|---|')
for (const r of rows)
  console.log(
    `| ${r.attack} | ${r.answer} | ${r.api_peak_rss_mib} | ${r.worker_peak_rss_mib} | ${r.healthz_p99_ms} (${r.healthz_failures}) |`,
  )
console.log(`\nwrote ${writeResult('abuse', { rows })}`)

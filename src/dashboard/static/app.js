// Refit's admin dashboard: a small hash-routed page over /v1/admin/*. The session cookie authenticates every
// call; state-changing calls also send the session's CSRF token. Charts are uPlot (served from node_modules).
// Everything is built with DOM calls (never innerHTML), so server data cannot inject markup.

const POLL_MS = 2000
const TERMINAL = ['succeeded', 'failed', 'cancelled']
const main = document.getElementById('main')
const nav = document.getElementById('nav')
let csrf = null
let cleanup = () => {}

// ---------- helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') el.className = v
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'value') el.value = v
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`)
    this.status = status
    this.code = body?.error?.code
  }
}

async function api(path, opts = {}) {
  const headers = { accept: 'application/json' }
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  if (opts.method && opts.method !== 'GET' && csrf) headers['x-refit-csrf'] = csrf
  const res = await fetch(path, {
    method: opts.method ?? 'GET',
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    credentials: 'same-origin',
  })
  const text = await res.text()
  let body = null
  try {
    body = text ? JSON.parse(text) : null
  } catch {
    body = null
  }
  if (!res.ok) {
    const err = new ApiError(res.status, body)
    if (res.status === 401 && !opts.quiet401) showSignIn('Your session has ended; sign in again.')
    throw err
  }
  return body
}

/** Replaces the page's content; null and false children are left out (replaceChildren would print them). */
const show = (...nodes) => main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false))
const enc = encodeURIComponent
const fmtTime = (s) => (s ? new Date(s * 1000).toLocaleString() : '—')
const fmtNum = (v, d = 4) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : '—')
function fmtBytes(n) {
  if (typeof n !== 'number') return '—'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`
}
function fmtEta(finish) {
  if (!finish) return '—'
  const s = Math.round(finish - Date.now() / 1000)
  if (s <= 0) return 'any moment'
  return s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`
}
const badge = (text) => h('span', { class: `badge ${text}` }, text)
function progressBar(fraction, wide = false) {
  const fill = h('div')
  fill.style.width = `${Math.round(Math.max(0, Math.min(1, fraction ?? 0)) * 100)}%`
  return h('span', { class: `bar${wide ? ' wide' : ''}`, title: `${Math.round((fraction ?? 0) * 100)}%` }, fill)
}
const kv = (label, value) => h('div', { class: 'kv' }, h('span', {}, label), h('span', {}, value ?? '—'))
const methodOf = (job) => job.method?.type ?? 'transfer'
const jobLink = (id) => h('a', { href: `#/jobs/${enc(id)}`, class: 'mono' }, id)
const modelLink = (id) => (id ? h('a', { href: `#/models/${enc(id)}`, class: 'mono' }, id) : '—')
const fileLink = (id) => (id ? h('a', { href: `#/datasets/${enc(id)}`, class: 'mono' }, id) : '—')

function errorBox(err) {
  return h('p', { class: 'error-text' }, err instanceof Error ? err.message : String(err))
}

/** Runs `fn` now and every `ms` until the page changes; errors show in `onError` and polling goes on. */
function poll(fn, ms, onError) {
  let stopped = false
  let timer = null
  const tick = async () => {
    try {
      await fn()
    } catch (err) {
      if (err?.status === 401) return
      onError?.(err)
    }
    if (!stopped) timer = setTimeout(tick, ms)
  }
  tick()
  return () => {
    stopped = true
    clearTimeout(timer)
  }
}

/** A uPlot line chart over epochs; the container's data-points attribute counts the x values (tests read it). */
function lineChart(container, title, names, colors) {
  const opts = {
    title,
    width: Math.max(360, container.clientWidth || 480),
    height: 240,
    scales: { x: { time: false } },
    axes: [{ label: 'epoch', incrs: [1, 2, 5, 10, 20, 50, 100] }, {}],
    series: [
      { label: 'epoch' },
      ...names.map((name, i) => ({ label: name, stroke: colors[i], width: 2, dash: i % 2 ? [6, 4] : undefined })),
    ],
    points: { show: true, size: 6 },
  }
  const data = [[], ...names.map(() => [])]
  const plot = new window.uPlot(opts, data, container)
  container.dataset.points = '0'
  return {
    plot,
    push(x, values) {
      data[0].push(x)
      names.forEach((n, i) => {
        data[i + 1].push(typeof values[n] === 'number' ? values[n] : null)
      })
      plot.setData(data)
      container.dataset.points = String(data[0].length)
    },
    destroy: () => plot.destroy(),
  }
}

/** A uPlot bar chart of counts per class. */
function barChart(container, title, labels, counts) {
  const xs = labels.map((_, i) => i)
  const plot = new window.uPlot(
    {
      title,
      width: Math.max(360, container.clientWidth || 480),
      height: 240,
      scales: {
        x: { time: false, range: [-0.5, labels.length - 0.5] },
        y: { range: (_u, _min, max) => [0, max * 1.1] },
      },
      axes: [{ splits: () => xs, values: (_u, vals) => vals.map((v) => labels[v] ?? '') }, {}],
      series: [
        { label: 'class' },
        {
          label: 'samples',
          fill: '#93c5fd',
          stroke: '#2563eb',
          paths: window.uPlot.paths.bars({ size: [0.7, 80] }),
          points: { show: false },
        },
      ],
      legend: { show: false },
    },
    [xs, counts],
    container,
  )
  container.dataset.points = String(xs.length)
  return plot
}

// ---------- sign-in ----------

function showSignIn(message) {
  cleanup()
  cleanup = () => {}
  csrf = null
  nav.hidden = true
  const error = h('p', { class: 'error-text', id: 'signin-error' }, message ?? '')
  const input = h('input', {
    type: 'password',
    name: 'token',
    id: 'token',
    autocomplete: 'current-password',
    required: true,
  })
  const form = h(
    'form',
    {
      onsubmit: async (e) => {
        e.preventDefault()
        error.textContent = ''
        try {
          const s = await api('/admin/session', { method: 'POST', body: { token: input.value }, quiet401: true })
          csrf = s.csrf_token
          input.value = ''
          start()
        } catch (err) {
          error.textContent = err.status === 401 ? 'That is not the admin token.' : err.message
        }
      },
    },
    h('label', { for: 'token' }, 'Admin token'),
    input,
    h('button', { class: 'primary', type: 'submit', id: 'sign-in' }, 'Sign in'),
    error,
  )
  show(
    h(
      'div',
      { class: 'panel signin' },
      h('h1', {}, 'Sign in'),
      h('p', { class: 'muted' }, 'Use the admin token that `npm start` printed (or REFIT_ADMIN_TOKEN).'),
      form,
    ),
  )
  input.focus()
}

document.getElementById('sign-out').addEventListener('click', async () => {
  await api('/admin/session', { method: 'DELETE', quiet401: true }).catch(() => {})
  showSignIn('Signed out.')
})

// ---------- pages ----------

async function jobsPage() {
  const params = new URLSearchParams(location.hash.split('?')[1] ?? '')
  const projects = (await api('/v1/admin/projects')).data
  const status = h(
    'select',
    { name: 'status' },
    h('option', { value: '' }, 'any'),
    ['validating_files', 'queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled'].map((s) =>
      h('option', { value: s }, s),
    ),
  )
  const project = h(
    'select',
    { name: 'project' },
    h('option', { value: '' }, 'any'),
    projects.map((p) => h('option', { value: p.id }, p.name)),
  )
  const method = h(
    'select',
    { name: 'method' },
    h('option', { value: '' }, 'any'),
    ['transfer', 'supervised', 'distillation'].map((m) => h('option', { value: m }, m)),
  )
  const model = h('input', { name: 'model', placeholder: 'e.g. mnist-cnn', size: 16 })
  for (const el of [status, project, method, model]) el.value = params.get(el.name) ?? ''
  const tbody = h('tbody', { id: 'jobs-body' })
  const note = h('p', { class: 'muted' })
  const refresh = async () => {
    const q = new URLSearchParams({ limit: '50' })
    for (const el of [status, project, method, model]) if (el.value) q.set(el.name, el.value.trim())
    const list = await api(`/v1/admin/jobs?${q}`)
    tbody.replaceChildren(
      ...list.data.map((j) =>
        h(
          'tr',
          { dataset: { job: j.id, status: j.status } },
          h('td', {}, jobLink(j.id)),
          h('td', {}, badge(j.status)),
          h('td', {}, j.project.name),
          h('td', {}, methodOf(j)),
          h('td', { class: 'mono' }, j.model),
          h(
            'td',
            {},
            progressBar(j.progress?.fraction),
            ' ',
            j.progress ? `${Math.round((j.progress.fraction ?? 0) * 100)}%` : '',
          ),
          h('td', {}, j.status === 'running' ? fmtEta(j.estimated_finish) : '—'),
          h('td', {}, fmtTime(j.created_at)),
        ),
      ),
    )
    note.textContent = list.data.length
      ? `${list.data.length} job(s)${list.has_more ? ' (newest 50)' : ''}; live every 2 s`
      : 'No jobs match.'
  }
  let stop = () => {}
  const restart = () => {
    stop()
    stop = poll(refresh, POLL_MS, (err) => {
      note.textContent = err.message
    })
  }
  for (const el of [status, project, method]) el.addEventListener('change', restart)
  model.addEventListener('change', restart)
  show(
    h('h1', {}, 'Jobs'),
    h(
      'div',
      { class: 'filters' },
      h('label', {}, 'Status', status),
      h('label', {}, 'Project', project),
      h('label', {}, 'Method', method),
      h('label', {}, 'Base model', model),
    ),
    h(
      'table',
      { id: 'jobs-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Job', 'Status', 'Project', 'Method', 'Base model', 'Progress', 'ETA', 'Created'].map((t) => h('th', {}, t)),
        ),
      ),
      tbody,
    ),
    note,
  )
  restart()
  return () => stop()
}

async function jobPage(id) {
  let job = await api(`/v1/admin/jobs/${enc(id)}`)
  const title = h('span', { class: 'mono' }, job.id)
  const status = h('span', { id: 'job-status' })
  const cancelBtn = h('button', { class: 'danger', id: 'cancel-job' }, 'Cancel')
  const retryBtn = h('button', { id: 'retry-job' }, 'Retry')
  const download = h('a', { id: 'download-model' }, 'Download model')
  const actionError = h('p', { class: 'error-text' })
  const details = h('div', { class: 'grid', id: 'job-details' })
  const hp = h('tbody')
  const log = h('div', { class: 'log', id: 'event-log' })
  const lossEl = h('div', { class: 'chart', id: 'loss-chart' })
  const accEl = h('div', { class: 'chart', id: 'accuracy-chart' })

  const render = () => {
    status.replaceChildren(badge(job.status))
    cancelBtn.disabled = TERMINAL.includes(job.status) || job.status === 'cancelling'
    retryBtn.disabled = !['failed', 'cancelled'].includes(job.status)
    download.hidden = !job.fine_tuned_model
    if (job.fine_tuned_model) download.href = `/v1/admin/models/${enc(job.fine_tuned_model)}/content`
    const p = job.progress
    details.replaceChildren(
      kv('Project', `${job.project?.name ?? ''} (${job.organization_id})`),
      kv('Base model', modelLink(job.model)),
      kv('Method', methodOf(job)),
      kv('Backend', job.backend),
      kv('Attempt', job.attempt),
      kv('Seed', job.seed),
      kv('Training file', fileLink(job.training_file)),
      kv('Validation file', fileLink(job.validation_file)),
      kv('Fine-tuned model', modelLink(job.fine_tuned_model)),
      kv(
        'Progress',
        h(
          'span',
          {},
          progressBar(p?.fraction, true),
          p ? ` epoch ${p.epoch ?? '?'} / ${p.total_epochs ?? '?'}, ${Math.round((p.fraction ?? 0) * 100)}%` : '',
        ),
      ),
      kv('ETA', job.status === 'running' ? fmtEta(job.estimated_finish) : '—'),
      kv('Samples / s', p?.samples_per_second ? Math.round(p.samples_per_second) : '—'),
      kv('Created', fmtTime(job.created_at)),
      kv('Started', fmtTime(job.started_at)),
      kv('Finished', fmtTime(job.finished_at)),
      kv('Queue position', job.queue_position),
      kv('Status reason', job.status_reason),
      kv('Error', job.error ? `${job.error.code}: ${job.error.message}` : null),
      kv('Retry of', job.retry_of_job_id ? jobLink(job.retry_of_job_id) : null),
    )
    const method = job.method?.[methodOf(job)] ?? {}
    const rows = { ...job.hyperparameters }
    for (const [k, v] of Object.entries(method)) if (k !== 'hyperparameters') rows[`${methodOf(job)}.${k}`] = v
    hp.replaceChildren(
      ...Object.entries(rows).map(([k, v]) =>
        h('tr', {}, h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, JSON.stringify(v))),
      ),
    )
  }

  cancelBtn.addEventListener('click', async () => {
    if (!confirm(`Cancel ${job.id}?`)) return
    actionError.textContent = ''
    try {
      job = await api(`/v1/admin/jobs/${enc(job.id)}/cancel`, { method: 'POST' })
      render()
    } catch (err) {
      actionError.textContent = err.message
    }
  })
  retryBtn.addEventListener('click', async () => {
    actionError.textContent = ''
    try {
      const retried = await api(`/v1/admin/jobs/${enc(job.id)}/retry`, { method: 'POST' })
      location.hash = `#/jobs/${enc(retried.id)}`
    } catch (err) {
      actionError.textContent = err.message
    }
  })

  show(
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    h('h1', {}, 'Job ', title, status, h('span', { class: 'actions' }, download, cancelBtn, retryBtn)),
    actionError,
    h('div', { class: 'panel' }, details),
    h('div', { class: 'charts' }, h('div', { class: 'panel' }, lossEl), h('div', { class: 'panel' }, accEl)),
    h(
      'div',
      { class: 'charts' },
      h('div', { class: 'panel' }, h('h2', {}, 'Hyperparameters (as resolved)'), h('table', {}, hp)),
      h('div', { class: 'panel' }, h('h2', {}, 'Events'), log),
    ),
  )
  render()
  const loss = lineChart(lossEl, 'Loss', ['loss', 'val_loss'], ['#2563eb', '#dc2626'])
  const acc = lineChart(accEl, 'Accuracy', ['accuracy', 'val_accuracy'], ['#15803d', '#b45309'])
  let lastX = 0

  // The live stream replays every event from the start, then follows: metrics events feed the charts.
  const es = new EventSource(`/v1/admin/jobs/${enc(id)}/events?stream=true`)
  es.addEventListener('event', (m) => {
    const e = JSON.parse(m.data)
    log.prepend(h('div', { class: e.level }, `${new Date(e.created_at * 1000).toLocaleTimeString()}  ${e.message}`))
    if (e.type === 'metrics' && e.data) {
      const x = typeof e.data.epoch === 'number' && e.data.epoch > lastX ? e.data.epoch : lastX + 1
      lastX = x
      loss.push(x, e.data)
      acc.push(x, e.data)
    }
  })
  es.addEventListener('job', (m) => {
    job = { ...job, ...JSON.parse(m.data), project: job.project }
    render()
  })
  es.addEventListener('done', async () => {
    es.close()
    job = await api(`/v1/admin/jobs/${enc(id)}`).catch(() => job)
    render()
  })
  return () => {
    es.close()
    loss.destroy()
    acc.destroy()
  }
}

async function datasetsPage() {
  const tbody = h('tbody')
  const note = h('p', { class: 'muted' })
  show(
    h('h1', {}, 'Datasets'),
    h(
      'table',
      { id: 'files-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['File', 'Project', 'Name', 'Format', 'Status', 'Rows', 'Classes', 'Size', 'Created'].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      tbody,
    ),
    note,
  )
  return poll(
    async () => {
      const list = await api('/v1/admin/files?limit=100')
      tbody.replaceChildren(
        ...list.data.map((f) =>
          h(
            'tr',
            {},
            h('td', {}, fileLink(f.id)),
            h('td', {}, f.project.name),
            h('td', {}, f.filename),
            h('td', {}, f.format ?? '—'),
            h('td', {}, badge(f.status)),
            h('td', {}, f.stats?.rows ?? '—'),
            h('td', {}, f.stats?.classes?.length ?? '—'),
            h('td', {}, fmtBytes(f.bytes)),
            h('td', {}, fmtTime(f.created_at)),
          ),
        ),
      )
      note.textContent = list.data.length ? '' : 'No datasets yet.'
    },
    5000,
    (err) => {
      note.textContent = err.message
    },
  )
}

/** class_counts is an array in class order (or, from older rows, an object by class name). */
function classCounts(stats) {
  const classes = stats?.classes ?? []
  const c = stats?.class_counts
  return classes.map((name, i) => (Array.isArray(c) ? c[i] : c?.[name]) ?? 0)
}

async function datasetPage(id) {
  const f = await api(`/v1/admin/files/${enc(id)}`)
  const s = f.stats
  const histEl = h('div', { class: 'chart', id: 'class-histogram' })
  const samples = h('div', { class: 'samples', id: 'samples' })
  show(
    h('p', {}, h('a', { href: '#/datasets' }, '← Datasets')),
    h('h1', {}, 'Dataset ', h('span', { class: 'mono' }, f.id), badge(f.status)),
    h(
      'div',
      { class: 'panel grid' },
      kv('Project', `${f.project.name} (${f.project.id})`),
      kv('File name', f.filename),
      kv('Format', f.format),
      kv('Size', fmtBytes(f.bytes)),
      kv('Rows', s?.rows),
      kv('Image shape', s?.image_shape ? s.image_shape.join(' × ') : null),
      kv('Features', s?.feature_count),
      kv('Classes', s?.classes?.length),
      kv('Created', fmtTime(f.created_at)),
    ),
    f.error
      ? h(
          'div',
          { class: 'panel' },
          h('h2', {}, `Validation error: ${f.error.code}`),
          h('p', {}, f.error.message),
          h(
            'ul',
            {},
            (f.error.details ?? []).map((d) =>
              h('li', {}, `${[d.line && `line ${d.line}`, d.entry, d.field].filter(Boolean).join(' ')}: ${d.message}`),
            ),
          ),
        )
      : null,
    s?.classes?.length ? h('div', { class: 'panel' }, histEl) : null,
    f.format === 'idx' || f.format === 'image_zip'
      ? h('div', { class: 'panel' }, h('h2', {}, 'Samples'), samples)
      : null,
  )
  const plot = s?.classes?.length ? barChart(histEl, 'Samples per class', s.classes, classCounts(s)) : null
  if ((f.format === 'idx' || f.format === 'image_zip') && f.status === 'processed') {
    api(`/v1/admin/files/${enc(id)}/samples?n=12`)
      .then((list) =>
        samples.replaceChildren(
          ...list.data.map((img) =>
            h(
              'figure',
              {},
              h('img', {
                src: `data:image/png;base64,${img.png_base64}`,
                alt: `sample ${img.index}, class ${img.label}`,
              }),
              h('figcaption', {}, img.label),
            ),
          ),
        ),
      )
      .catch((err) => samples.replaceChildren(errorBox(err)))
  }
  return () => plot?.destroy()
}

async function modelsPage() {
  const kind = h(
    'select',
    { name: 'kind' },
    h('option', { value: '' }, 'any'),
    ['fine_tuned', 'uploaded', 'builtin', 'architecture'].map((k) => h('option', { value: k }, k)),
  )
  const tbody = h('tbody')
  const refresh = async () => {
    const list = await api(`/v1/admin/models?limit=100${kind.value ? `&kind=${kind.value}` : ''}`)
    tbody.replaceChildren(
      ...list.data.map((m) => {
        const best = m.metrics?.best
        return h(
          'tr',
          {},
          h('td', {}, modelLink(m.id)),
          h('td', {}, m.kind),
          h('td', {}, m.project?.name ?? '(built-in)'),
          h('td', {}, m.base_model ? modelLink(m.base_model) : '—'),
          h('td', {}, m.fine_tuning_job ? jobLink(m.fine_tuning_job) : '—'),
          h('td', {}, m.classes?.length ?? '—'),
          h('td', {}, fmtNum(best?.val_accuracy ?? best?.accuracy)),
          h('td', {}, fmtBytes(m.bytes)),
          h('td', {}, fmtTime(m.created_at)),
        )
      }),
    )
  }
  kind.addEventListener('change', () => refresh().catch(() => {}))
  show(
    h('h1', {}, 'Models'),
    h('div', { class: 'filters' }, h('label', {}, 'Kind', kind)),
    h(
      'table',
      { id: 'models-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Model', 'Kind', 'Project', 'Base model', 'Job', 'Classes', 'Best accuracy', 'Size', 'Created'].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      tbody,
    ),
  )
  await refresh()
  return () => {}
}

function metricsTable(title, m) {
  if (!m) return null
  return h(
    'div',
    {},
    h('h2', {}, title),
    h(
      'table',
      {},
      h(
        'tbody',
        {},
        Object.entries(m).map(([k, v]) =>
          h(
            'tr',
            {},
            h('td', {}, k),
            h('td', { class: 'mono' }, typeof v === 'object' ? JSON.stringify(v) : fmtNum(v)),
          ),
        ),
      ),
    ),
  )
}

async function modelPage(id) {
  const [m, lineage] = await Promise.all([
    api(`/v1/admin/models/${enc(id)}`),
    api(`/v1/admin/models/${enc(id)}/lineage`),
  ])
  const downloadable = m.kind !== 'architecture'
  show(
    h('p', {}, h('a', { href: '#/models' }, '← Models')),
    h(
      'h1',
      {},
      'Model ',
      h('span', { class: 'mono' }, m.id),
      badge(m.kind),
      downloadable
        ? h(
            'span',
            { class: 'actions' },
            h('a', { href: `/v1/admin/models/${enc(m.id)}/content`, id: 'download-model' }, 'Download'),
          )
        : null,
    ),
    h(
      'div',
      { class: 'panel grid' },
      kv('Project', m.project ? `${m.project.name} (${m.project.id})` : '(built-in)'),
      kv('Base model', modelLink(m.base_model)),
      kv('Job', m.fine_tuning_job ? jobLink(m.fine_tuning_job) : null),
      kv('Training file', fileLink(m.training_file)),
      kv('Input shape', m.input_shape?.join(' × ')),
      kv('Classes', m.classes?.join(', ')),
      kv('Backend', m.backend),
      kv('Seed', m.seed),
      kv('Size', fmtBytes(m.bytes)),
      kv('Created', fmtTime(m.created_at)),
    ),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Lineage'),
      h(
        'div',
        { class: 'chain', id: 'lineage' },
        lineage.chain.flatMap((c, i) => [
          i ? h('span', { class: 'muted' }, '→') : null,
          h(
            'span',
            {},
            modelLink(c.id),
            ' ',
            h('span', { class: 'muted' }, `(${c.kind}${c.deleted ? ', deleted' : ''})`),
          ),
        ]),
      ),
    ),
    m.metrics
      ? h(
          'div',
          { class: 'panel charts', id: 'model-metrics' },
          metricsTable('Final epoch', m.metrics.final),
          metricsTable('Best epoch', m.metrics.best),
          metricsTable('Evaluation', m.metrics.evaluation),
        )
      : null,
    lineage.checkpoints.length
      ? h(
          'div',
          { class: 'panel' },
          h('h2', {}, 'Checkpoints'),
          h(
            'table',
            {},
            h(
              'thead',
              {},
              h(
                'tr',
                {},
                ['Checkpoint', 'Epoch', 'Step', 'Metrics'].map((t) => h('th', {}, t)),
              ),
            ),
            h(
              'tbody',
              {},
              lineage.checkpoints.map((c) =>
                h(
                  'tr',
                  {},
                  h('td', { class: 'mono' }, c.id),
                  h('td', {}, c.epoch),
                  h('td', {}, c.step),
                  h(
                    'td',
                    { class: 'mono' },
                    Object.entries(c.metrics ?? {})
                      .map(([k, v]) => `${k} ${fmtNum(v)}`)
                      .join(', '),
                  ),
                ),
              ),
            ),
          ),
        )
      : null,
  )
  return () => {}
}

async function workersPage() {
  const body = h('div', { id: 'workers' })
  show(h('h1', {}, 'Workers'), body)
  return poll(
    async () => {
      let list
      try {
        list = await api('/v1/admin/workers', { quiet401: false })
      } catch (err) {
        if (err.status === 404) {
          body.replaceChildren(
            h('p', { class: 'muted' }, 'This server has no worker registry yet (GET /v1/admin/workers answers 404).'),
          )
          return
        }
        throw err
      }
      body.replaceChildren(
        h(
          'table',
          { id: 'workers-table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              [
                'Worker',
                'Alive',
                'Role',
                'Host',
                'PID',
                'Backend',
                'Class',
                'Samples/s',
                'Capabilities',
                'Current jobs',
                'Last heartbeat',
              ].map((t) => h('th', {}, t)),
            ),
          ),
          h(
            'tbody',
            {},
            list.data.map((w) =>
              h(
                'tr',
                {},
                h('td', { class: 'mono' }, w.id),
                h('td', {}, badge(w.alive ? 'alive' : 'dead')),
                h('td', {}, w.role ?? '—'),
                h('td', {}, w.hostname ?? '—'),
                h('td', {}, w.pid ?? '—'),
                h('td', {}, w.backend ?? '—'),
                h('td', {}, w.resource_class ?? '—'),
                h('td', {}, w.throughput_samples_per_second ?? '—'),
                h(
                  'td',
                  {},
                  Array.isArray(w.capabilities) ? w.capabilities.join(', ') : JSON.stringify(w.capabilities ?? '—'),
                ),
                h(
                  'td',
                  {},
                  (w.current_jobs ?? []).length
                    ? (w.current_jobs ?? []).flatMap((j, i) => [i ? ', ' : null, jobLink(j)])
                    : 'idle',
                ),
                h(
                  'td',
                  {},
                  fmtTime(
                    typeof w.last_heartbeat_at === 'number'
                      ? w.last_heartbeat_at
                      : Date.parse(w.last_heartbeat_at) / 1000,
                  ),
                ),
              ),
            ),
          ),
        ),
        // replaceChildren() would print a null argument as the text "null"
        ...(list.data.length ? [] : [h('p', { class: 'muted' }, 'No workers registered.')]),
      )
    },
    5000,
    (err) => body.replaceChildren(errorBox(err)),
  )
}

async function queuesPage() {
  const tbody = h('tbody')
  show(
    h(
      'h1',
      {},
      'Queues',
      h('span', { class: 'actions' }, h('a', { href: '/admin/queues', id: 'bull-board-link' }, 'Open Bull Board')),
    ),
    h(
      'table',
      { class: 'counts', id: 'queues-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ['Queue', 'Waiting', 'Active', 'Delayed', 'Prioritized', 'Failed', 'Completed', 'Paused'].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      tbody,
    ),
  )
  return poll(async () => {
    const list = await api('/v1/admin/queues')
    tbody.replaceChildren(
      ...list.data.map((q) =>
        h(
          'tr',
          { dataset: { queue: q.name } },
          h('td', {}, `${q.prefix}:${q.name}`),
          ['waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed'].map((k) => h('td', {}, q.counts[k])),
          h('td', {}, q.paused ? 'yes' : 'no'),
        ),
      ),
    )
  }, POLL_MS)
}

// ---------- router ----------

const ROUTES = [
  [/^#\/jobs\/([^/?]+)/, (m) => jobPage(decodeURIComponent(m[1])), 'jobs'],
  [/^#\/datasets\/([^/?]+)/, (m) => datasetPage(decodeURIComponent(m[1])), 'datasets'],
  [/^#\/datasets/, () => datasetsPage(), 'datasets'],
  [/^#\/models\/([^/?]+)/, (m) => modelPage(decodeURIComponent(m[1])), 'models'],
  [/^#\/models/, () => modelsPage(), 'models'],
  [/^#\/workers/, () => workersPage(), 'workers'],
  [/^#\/queues/, () => queuesPage(), 'queues'],
  [/^/, () => jobsPage(), 'jobs'],
]

async function route() {
  if (!csrf) return
  cleanup()
  cleanup = () => {}
  const hash = location.hash || '#/jobs'
  for (const [re, page, name] of ROUTES) {
    const m = re.exec(hash)
    if (!m) continue
    for (const a of nav.querySelectorAll('a[data-page]')) a.classList.toggle('active', a.dataset.page === name)
    show(h('p', { class: 'muted' }, 'Loading…'))
    try {
      const stop = await page(m)
      cleanup = stop ?? (() => {})
    } catch (err) {
      if (err?.status !== 401) show(errorBox(err))
    }
    return
  }
}

function start() {
  nav.hidden = false
  route()
}

window.addEventListener('hashchange', route)

const session = await api('/admin/session', { quiet401: true }).catch(() => null)
if (session?.signed_in) {
  csrf = session.csrf_token
  start()
} else showSignIn()

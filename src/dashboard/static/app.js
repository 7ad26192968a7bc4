// Refit's admin dashboard: a small hash-routed page over /v1/admin/*. The session cookie authenticates every
// call; state-changing calls also send the session's CSRF token. Charts are uPlot (served from node_modules).
// Everything is built with DOM calls (never innerHTML), so server data cannot inject markup. Polled tables
// update their rows in place (a cell is replaced only when it changed), so focus and selection survive.
// Page state that a user may share (filters, sort, page, compared jobs) lives in the URL's hash query.

const POLL_MS = 2000
const TERMINAL = ['succeeded', 'failed', 'cancelled']
const JOB_STATUSES = [
  'validating_files',
  'queued',
  'running',
  'cancelling',
  'paused',
  'succeeded',
  'failed',
  'cancelled',
]
/** Statuses Pause applies to (the API refuses the others with job_not_pausable). */
const PAUSABLE = ['validating_files', 'queued', 'running']
const PALETTE = ['#2563eb', '#dc2626', '#15803d', '#b45309', '#7c3aed', '#0891b2', '#db2777', '#4d7c0f']
const main = document.getElementById('main')
const nav = document.getElementById('nav')
const menuToggle = document.getElementById('menu-toggle')
const live = document.getElementById('live')
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
    else if (k === 'checked') el.checked = !!v
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
    this.param = body?.error?.param
    this.details = body?.error?.details
  }
}

async function api(path, opts = {}) {
  const headers = { accept: 'application/json' }
  const form = opts.form
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  if (opts.method && opts.method !== 'GET' && csrf) headers['x-refit-csrf'] = csrf
  const res = await fetch(path, {
    method: opts.method ?? 'GET',
    headers,
    body: form ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
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
function fmtDuration(s) {
  if (typeof s !== 'number' || s < 0) return '—'
  s = Math.round(s)
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
}
function fmtEta(finish) {
  if (!finish) return 'estimating…'
  const s = Math.round(finish - Date.now() / 1000)
  return s <= 0 ? 'any moment' : fmtDuration(s)
}
const jobDuration = (j) =>
  j.started_at
    ? (j.finished_at ?? (TERMINAL.includes(j.status) ? j.started_at : Date.now() / 1000)) - j.started_at
    : null
const badge = (text) => h('span', { class: `badge ${text}` }, text)
function progressBar(fraction, label, wide = false) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction ?? 0)) * 100)
  const fill = h('div')
  fill.style.width = `${pct}%`
  return h(
    'span',
    {
      class: `bar${wide ? ' wide' : ''}`,
      role: 'progressbar',
      'aria-valuemin': '0',
      'aria-valuemax': '100',
      'aria-valuenow': String(pct),
      'aria-label': label,
    },
    fill,
  )
}
const kv = (label, value, id) => h('div', { class: 'kv' }, h('span', {}, label), h('span', { id }, value ?? '—'))
const methodOf = (job) => job.method?.type ?? 'transfer'
const jobLink = (id) => h('a', { href: `#/jobs/${enc(id)}`, class: 'mono' }, id)
const modelLink = (id) => (id ? h('a', { href: `#/models/${enc(id)}`, class: 'mono' }, id) : '—')
const fileLink = (id) => (id ? h('a', { href: `#/datasets/${enc(id)}`, class: 'mono' }, id) : '—')
const valMetric = (m) => (m ? (m.val_accuracy ?? m.accuracy) : undefined)
const announce = (text) => {
  live.textContent = text
}

function errorBox(err) {
  return h('p', { class: 'error-text', role: 'alert' }, err instanceof Error ? err.message : String(err))
}

function errorText(err) {
  if (!(err instanceof Error)) return String(err)
  const details = (err.details ?? []).map((d) =>
    [d.line && `line ${d.line}`, d.entry, d.field, d.message].filter(Boolean).join(' '),
  )
  return [`${err.code ? `${err.code}: ` : ''}${err.message}`, ...details].join(' — ')
}

function table(id, caption, headers, tbody, extra = {}) {
  // a scrolling region must be reachable by keyboard: focusable, and named for screen readers
  return h(
    'div',
    { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption ?? id ?? 'table' },
    h(
      'table',
      { id, ...extra },
      caption ? h('caption', {}, caption) : null,
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          headers.map((t) => (t instanceof Node ? t : h('th', { scope: 'col' }, t))),
        ),
      ),
      tbody,
    ),
  )
}

/**
 * Updates `tbody` to `items` in place: rows are keyed, and a cell is replaced only when its markup changed,
 * so focus, text selection and checkbox state in unchanged cells survive a refresh.
 */
function syncRows(tbody, items, key, render) {
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]))
  const wanted = []
  for (const item of items) {
    const fresh = render(item)
    fresh.dataset.key = key(item)
    const old = existing.get(fresh.dataset.key)
    if (!old) {
      wanted.push(fresh)
      continue
    }
    existing.delete(fresh.dataset.key)
    for (const [name, value] of Object.entries(fresh.dataset))
      if (old.dataset[name] !== value) old.dataset[name] = value
    const oldCells = [...old.children]
    const newCells = [...fresh.children]
    newCells.forEach((cell, i) => {
      if (!oldCells[i]) old.append(cell)
      else if (oldCells[i].outerHTML !== cell.outerHTML) oldCells[i].replaceWith(cell)
    })
    wanted.push(old)
  }
  for (const tr of existing.values()) tr.remove()
  wanted.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null)
  })
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

// ---------- URL state ----------

function hashParts() {
  const [path, query] = (location.hash || '#/jobs').split('?')
  return { path, params: new URLSearchParams(query ?? '') }
}

/** Writes page state into the hash without re-rendering the page (replaceState fires no hashchange). */
function setParams(params) {
  const { path } = hashParts()
  for (const [k, v] of [...params.entries()]) if (v === '') params.delete(k)
  const q = params.toString()
  history.replaceState(null, '', `${location.pathname}${path}${q ? `?${q}` : ''}`)
}

// ---------- charts ----------

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim()

/**
 * A uPlot line chart with an empty state, a data-table fallback and a redraw on resize. `series` are
 * `{label, color, dash}`; `sync` links cursors of charts sharing the key; `markers` are x positions drawn as
 * dashed vertical lines (phase boundaries). The container's data-points attribute counts the x values.
 */
function lineChart(container, { title, xLabel, series, sync, empty = 'No data yet.', logScale = false }) {
  const ink = cssVar('--muted') || '#596170'
  const grid = cssVar('--grid') || '#e5e7eb'
  const markers = []
  const holder = h('div', {
    class: 'chart',
    role: 'img',
    'aria-label': `${title} chart; the data table below holds the values`,
  })
  const emptyEl = h('p', { class: 'empty' }, empty)
  const tbody = h('tbody')
  const fallback = h(
    'details',
    {},
    h('summary', {}, `${title}: data table`),
    table(null, title, [xLabel, ...series.map((s) => s.label)], tbody),
  )
  container.replaceChildren(h('h2', {}, title), emptyEl, holder, fallback)
  const axis = { stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid } }
  const opts = {
    width: Math.max(240, container.clientWidth - 4 || 480),
    height: 220,
    scales: {
      x: { time: false, range: (_u, min, max) => [min, max > min ? max : min + 1] },
      y: logScale ? { distr: 3 } : {},
    },
    // epochs and steps are whole numbers: no 1.5 ticks
    axes: [{ ...axis, label: xLabel, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] }, axis],
    series: [
      { label: xLabel },
      ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, dash: s.dash, spanGaps: true })),
    ],
    cursor: sync ? { sync: { key: sync, setSeries: true } } : {},
    legend: { live: true },
    points: { show: series.length < 4, size: 5 },
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx
          ctx.save()
          ctx.strokeStyle = ink
          ctx.setLineDash([4, 4])
          for (const x of markers) {
            const px = u.valToPos(x, 'x', true)
            if (px < u.bbox.left || px > u.bbox.left + u.bbox.width) continue
            ctx.beginPath()
            ctx.moveTo(px, u.bbox.top)
            ctx.lineTo(px, u.bbox.top + u.bbox.height)
            ctx.stroke()
          }
          ctx.restore()
        },
      ],
    },
  }
  const data = [[], ...series.map(() => [])]
  const plot = new window.uPlot(opts, data, holder)
  container.dataset.points = '0'
  const ro = new ResizeObserver(() => {
    const w = Math.max(240, container.clientWidth - 4)
    if (Math.abs(plot.width - w) > 2) plot.setSize({ width: w, height: 220 })
  })
  ro.observe(container)
  let tableTimer = null
  const renderTable = () => {
    tableTimer = null
    const rows = data[0].map((x, i) =>
      h(
        'tr',
        {},
        h('td', {}, fmtNum(x, 2)),
        data.slice(1).map((col) => h('td', {}, fmtNum(col[i]))),
      ),
    )
    tbody.replaceChildren(...rows.slice(-200))
  }
  const redraw = () => {
    plot.setData(data)
    container.dataset.points = String(data[0].length)
    emptyEl.hidden = data[0].length > 0
    holder.style.visibility = data[0].length > 0 ? 'visible' : 'hidden'
    if (!tableTimer) tableTimer = setTimeout(renderTable, 500)
  }
  redraw()
  return {
    plot,
    /** adds one x with a value per series (undefined: a gap) */
    push(x, values) {
      data[0].push(x)
      series.forEach((s, i) => {
        const v = values[s.key ?? s.label]
        data[i + 1].push(typeof v === 'number' && Number.isFinite(v) ? v : null)
      })
      redraw()
    },
    /** replaces every series: `xs` and one array per series */
    set(xs, columns) {
      data[0] = xs
      columns.forEach((c, i) => {
        data[i + 1] = c
      })
      redraw()
    },
    mark(x) {
      if (!markers.includes(x)) markers.push(x)
      plot.redraw(false)
    },
    get points() {
      return data[0].length
    },
    destroy() {
      ro.disconnect()
      clearTimeout(tableTimer)
      plot.destroy()
    },
  }
}

/** A uPlot bar chart of counts per class. */
function barChart(container, title, labels, counts) {
  const xs = labels.map((_, i) => i)
  const ink = cssVar('--muted') || '#596170'
  const axis = { stroke: ink, grid: { stroke: cssVar('--grid') || '#e5e7eb' } }
  const holder = h('div', {
    class: 'chart',
    role: 'img',
    'aria-label': `${title}: ${labels.map((l, i) => `${l} ${counts[i]}`).join(', ')}`,
  })
  container.replaceChildren(h('h2', {}, title), holder)
  const plot = new window.uPlot(
    {
      width: Math.max(240, container.clientWidth - 4 || 480),
      height: 220,
      scales: {
        x: { time: false, range: [-0.5, labels.length - 0.5] },
        y: { range: (_u, _min, max) => [0, max * 1.1] },
      },
      axes: [{ ...axis, splits: () => xs, values: (_u, vals) => vals.map((v) => labels[v] ?? '') }, axis],
      series: [
        { label: 'class' },
        {
          label: 'samples',
          fill: '#60a5fa',
          stroke: '#1d4ed8',
          paths: window.uPlot.paths.bars({ size: [0.7, 80] }),
          points: { show: false },
        },
      ],
      legend: { show: false },
    },
    [xs, counts],
    holder,
  )
  container.dataset.points = String(xs.length)
  const ro = new ResizeObserver(() => plot.setSize({ width: Math.max(240, container.clientWidth - 4), height: 220 }))
  ro.observe(container)
  return {
    destroy() {
      ro.disconnect()
      plot.destroy()
    },
  }
}

// ---------- sign-in and navigation ----------

function showSignIn(message) {
  cleanup()
  cleanup = () => {}
  csrf = null
  nav.hidden = true
  menuToggle.hidden = true
  const error = h('p', { class: 'error-text', id: 'signin-error', role: 'alert' }, message ?? '')
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
      h('p', { class: 'muted' }, 'Use the admin token that npm start printed (or REFIT_ADMIN_TOKEN).'),
      form,
    ),
  )
  input.focus()
}

document.getElementById('sign-out').addEventListener('click', async () => {
  await api('/admin/session', { method: 'DELETE', quiet401: true }).catch(() => {})
  showSignIn('Signed out.')
})
menuToggle.addEventListener('click', () => {
  const open = nav.classList.toggle('closed') === false
  menuToggle.setAttribute('aria-expanded', String(open))
})

// ---------- jobs: the run table ----------

async function jobsPage() {
  const { params } = hashParts()
  const projects = (await api('/v1/admin/projects')).data
  const select = (name, label, options) =>
    h(
      'label',
      {},
      label,
      h(
        'select',
        { name },
        h('option', { value: '' }, 'any'),
        options.map(([v, t]) => h('option', { value: v }, t)),
      ),
    )
  const filters = h(
    'form',
    { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
    h(
      'label',
      {},
      'Search',
      h('input', { name: 'q', id: 'job-search', type: 'search', placeholder: 'id, suffix, model' }),
    ),
    select(
      'status',
      'Status',
      JOB_STATUSES.map((s) => [s, s]),
    ),
    select(
      'project',
      'Project',
      projects.map((p) => [p.id, p.name]),
    ),
    select(
      'method',
      'Method',
      ['transfer', 'supervised', 'distillation'].map((m) => [m, m]),
    ),
    h('label', {}, 'Base model', h('input', { name: 'model', placeholder: 'e.g. mnist-cnn', size: 14 })),
  )
  const fields = [...filters.querySelectorAll('input, select')]
  for (const el of fields) el.value = params.get(el.name) ?? ''
  let sort = params.get('sort') ?? 'created'
  let dir = params.get('dir') ?? 'desc'
  let after = params.get('after') ?? ''
  let back = (params.get('back') ?? '').split(',').filter(Boolean)
  const selected = new Set((params.get('compare') ?? '').split(',').filter(Boolean))

  const tbody = h('tbody', { id: 'jobs-body' })
  const note = h('p', { class: 'muted', role: 'status' })
  const compareBtn = h('button', { id: 'compare-selected', type: 'button' }, 'Compare')
  const prev = h('button', { id: 'prev-page', type: 'button' }, '← Previous')
  const next = h('button', { id: 'next-page', type: 'button' }, 'Next →')
  let lastList = null

  const writeUrl = () => {
    const p = new URLSearchParams()
    for (const el of fields) p.set(el.name, el.value.trim())
    if (sort !== 'created') p.set('sort', sort)
    if (dir !== 'desc') p.set('dir', dir)
    p.set('after', after)
    p.set('back', back.join(','))
    p.set('compare', [...selected].join(','))
    setParams(p)
  }
  const updateCompare = () => {
    compareBtn.disabled = selected.size < 2 || selected.size > 8
    compareBtn.textContent = `Compare ${selected.size ? `(${selected.size})` : ''}`.trim()
  }
  compareBtn.addEventListener('click', () => {
    location.hash = `#/compare?jobs=${[...selected].map(enc).join(',')}`
  })

  const sortHeader = (key, label, num = false) =>
    h(
      'th',
      {
        scope: 'col',
        class: num ? 'num' : undefined,
        'aria-sort': sort === key ? (dir === 'asc' ? 'ascending' : 'descending') : 'none',
      },
      h(
        'button',
        {
          type: 'button',
          class: 'sort',
          dataset: { sort: key },
          onclick: () => {
            dir = sort === key && dir === 'desc' ? 'asc' : 'desc'
            sort = key
            // the API ranks every matching job (not only this page): start again from the first page
            after = ''
            back = []
            writeUrl()
            restart()
            for (const th of headRow.querySelectorAll('th[aria-sort]'))
              th.setAttribute(
                'aria-sort',
                th.querySelector('button').dataset.sort === sort
                  ? dir === 'asc'
                    ? 'ascending'
                    : 'descending'
                  : 'none',
              )
          },
        },
        label,
      ),
    )
  const headRow = h(
    'tr',
    {},
    h('th', { scope: 'col' }, h('span', { class: 'skip' }, 'Select')),
    h('th', { scope: 'col' }, 'Job'),
    sortHeader('status', 'Status'),
    sortHeader('project', 'Project'),
    h('th', { scope: 'col' }, 'Method'),
    h('th', { scope: 'col' }, 'Sweep'),
    h('th', { scope: 'col' }, 'Base model'),
    h('th', { scope: 'col' }, 'Progress'),
    sortHeader('duration', 'Duration', true),
    sortHeader('final', 'Final val', true),
    sortHeader('best', 'Best val', true),
    h('th', { scope: 'col' }, 'Model'),
    h('th', { scope: 'col' }, 'Failure'),
    sortHeader('created', 'Created'),
  )

  const row = (j) => {
    const p = j.progress
    return h(
      'tr',
      { dataset: { job: j.id, status: j.status } },
      h(
        'td',
        {},
        h('input', {
          type: 'checkbox',
          class: 'pick',
          value: j.id,
          'aria-label': `select ${j.id} to compare`,
          checked: selected.has(j.id),
        }),
      ),
      h('td', {}, jobLink(j.id), j.suffix ? h('div', { class: 'muted' }, j.suffix) : null),
      h('td', { dataset: { col: 'status' } }, badge(j.status)),
      h('td', {}, j.project.name),
      h('td', {}, methodOf(j)),
      h('td', { dataset: { col: 'sweep' } }, j.sweep_id ? sweepLink(j.sweep_id) : ''),
      h('td', { class: 'mono' }, j.model),
      h(
        'td',
        { dataset: { col: 'progress' } },
        j.status === 'queued' && j.queue_position
          ? `#${j.queue_position} in queue`
          : [
              progressBar(p?.fraction, `progress of ${j.id}`),
              ' ',
              p ? `${Math.round((p.fraction ?? 0) * 100)}%` : '',
              j.status === 'running' ? h('div', { class: 'muted' }, `ETA ${fmtEta(j.estimated_finish)}`) : null,
            ],
      ),
      h('td', { class: 'num', dataset: { col: 'duration' } }, fmtDuration(jobDuration(j))),
      h('td', { class: 'num', dataset: { col: 'final' } }, fmtNum(valMetric(j.metrics?.final))),
      h('td', { class: 'num', dataset: { col: 'best' } }, fmtNum(valMetric(j.metrics?.best))),
      h('td', { dataset: { col: 'model-out' } }, j.fine_tuned_model ? modelLink(j.fine_tuned_model) : '—'),
      h('td', { dataset: { col: 'failure' }, class: 'mono' }, j.error?.code ?? ''),
      h('td', {}, fmtTime(j.created_at)),
    )
  }
  const render = () => {
    if (!lastList) return
    const items = lastList.data // in the API's order (`sort`, `order`)
    syncRows(tbody, items, (j) => j.id, row)
    note.textContent = items.length
      ? `${items.length} job(s) on this page${lastList.has_more ? '; more on the next page' : ''}. Live every 2 s.`
      : 'No jobs match these filters.'
    prev.disabled = !after
    next.disabled = !lastList.has_more
  }
  tbody.addEventListener('change', (e) => {
    if (!e.target.classList.contains('pick')) return
    if (e.target.checked) selected.add(e.target.value)
    else selected.delete(e.target.value)
    updateCompare()
    writeUrl()
  })
  // a request sent before the filters, sort or page changed may answer after the new one: its rows are dropped
  // (else the table would flash back to the old filter until the next poll)
  let generation = 0
  const refresh = async () => {
    const mine = generation
    const q = new URLSearchParams({ limit: '20' })
    for (const el of fields) if (el.value.trim()) q.set(el.name, el.value.trim())
    if (sort !== 'created') q.set('sort', sort)
    if (dir !== 'desc') q.set('order', dir)
    if (after) q.set('after', after)
    const list = await api(`/v1/admin/jobs?${q}`)
    if (mine !== generation) return
    lastList = list
    render()
  }
  let stop = () => {}
  const restart = () => {
    generation++
    stop()
    stop = poll(refresh, POLL_MS, (err) => {
      note.textContent = err.message
    })
  }
  let typing = null
  const changed = () => {
    generation++
    after = ''
    back = []
    writeUrl()
    clearTimeout(typing)
    typing = setTimeout(restart, 250)
  }
  for (const el of fields) el.addEventListener(el.tagName === 'INPUT' ? 'input' : 'change', changed)
  next.addEventListener('click', () => {
    back.push(after || '-')
    after = lastList.data.at(-1).id
    writeUrl()
    restart()
  })
  prev.addEventListener('click', () => {
    const b = back.pop()
    after = b && b !== '-' ? b : ''
    writeUrl()
    restart()
  })
  updateCompare()
  show(
    h(
      'h1',
      {},
      'Jobs',
      h('span', { class: 'actions' }, h('a', { href: '#/new-job', id: 'new-job-link' }, 'New job'), compareBtn),
    ),
    filters,
    h(
      'div',
      { class: 'scroll' },
      h(
        'table',
        { id: 'jobs-table' },
        h('caption', { class: 'skip' }, 'Fine-tuning jobs'),
        h('thead', {}, headRow),
        tbody,
      ),
    ),
    h('div', { class: 'row' }, prev, next),
    note,
  )
  restart()
  return () => {
    stop()
    clearTimeout(typing)
  }
}

// ---------- one job ----------

function hyperparameterRows(job) {
  const rows = {}
  const flatten = (prefix, v) => {
    if (v && typeof v === 'object' && !Array.isArray(v))
      for (const [k, x] of Object.entries(v)) flatten(`${prefix}${k}.`, x)
    else rows[prefix.slice(0, -1)] = v
  }
  flatten('', job.hyperparameters ?? {})
  const method = job.method?.[methodOf(job)] ?? {}
  for (const [k, v] of Object.entries(method)) if (k !== 'hyperparameters') flatten(`${methodOf(job)}.${k}.`, v)
  return rows
}

const fmtValue = (v) => (v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v))

function failureBanner(job) {
  if (!job.error) return null
  const retryable = job.error.retryable
  return h(
    'div',
    { class: 'banner', id: 'failure-banner', role: 'alert' },
    h('strong', {}, `Failed: ${job.error.code}`),
    h('p', { id: 'failure-message' }, job.error.message),
    h(
      'p',
      { class: 'muted' },
      retryable === false
        ? 'Retrying with the same settings fails the same way: clone the job and change what the message names.'
        : 'If the cause was temporary (a worker or the database), Retry runs it again with the same seed.',
    ),
  )
}

/** Evaluation: which data, confusion-matrix heatmap (counts or normalised by row), per-class table. */
function evaluationView(ev, opts = {}) {
  if (!ev?.confusion_matrix)
    return h('p', { class: 'empty', id: 'evaluation-empty' }, opts.empty ?? 'No evaluation yet.')
  const classes = ev.classes ?? ev.per_class?.map((c) => c.class) ?? []
  const m = ev.confusion_matrix
  const heat = h('tbody')
  let normalised = false
  // Text stays in the ink colour; the fill is capped where that text still has 4.5:1 contrast on it
  // (60% of the blue over a light panel, 85% over a dark one).
  const maxMix = matchMedia('(prefers-color-scheme: dark)').matches ? 85 : 60
  const draw = () => {
    heat.replaceChildren(
      ...m.map((row, i) => {
        const total = row.reduce((a, b) => a + b, 0)
        return h(
          'tr',
          {},
          h('th', { scope: 'row' }, classes[i]),
          row.map((count, j) => {
            const share = total ? count / total : 0
            const td = h(
              'td',
              {
                dataset: { count: String(count), true: classes[i], predicted: classes[j] },
                title: `true ${classes[i]}, predicted ${classes[j]}: ${count}`,
              },
              normalised ? share.toFixed(2) : String(count),
            )
            // opacity scales the accent colour; text switches to white on dark cells so contrast holds
            td.style.background = `color-mix(in srgb, #1d4ed8 ${Math.round(share * maxMix)}%, transparent)`
            return td
          }),
        )
      }),
    )
  }
  draw()
  const toggle = h('input', {
    type: 'checkbox',
    id: 'normalise',
    onchange: (e) => {
      normalised = e.target.checked
      draw()
    },
  })
  const f1 = (c) => (c.precision + c.recall ? (2 * c.precision * c.recall) / (c.precision + c.recall) : 0)
  const dataLine =
    ev.data === 'validation_split'
      ? ['the validation split held out of the training file ', fileLink(ev.file)]
      : ev.data === 'validation_file'
        ? ['the validation file ', fileLink(ev.file)]
        : ev.file
          ? ['the file ', fileLink(ev.file)]
          : ['data not recorded']
  return h(
    'div',
    { id: opts.id ?? 'evaluation' },
    h(
      'p',
      { id: 'eval-data' },
      `Accuracy ${fmtNum(ev.accuracy)}, loss ${fmtNum(ev.loss)} on ${ev.samples} samples of `,
      ...dataLine,
      '.',
    ),
    h('label', {}, toggle, ' Normalise rows (share of each true class)'),
    table(
      'confusion',
      'Confusion matrix (rows: true class, columns: predicted)',
      [h('th', { scope: 'col' }, 'true \\ predicted'), ...classes.map((c) => h('th', { scope: 'col' }, c))],
      heat,
      { class: 'heat' },
    ),
    table(
      'per-class-table',
      'Per class',
      ['Class', 'Precision', 'Recall', 'F1', 'Support'],
      h(
        'tbody',
        {},
        (ev.per_class ?? []).map((c) =>
          h(
            'tr',
            { dataset: { class: c.class } },
            h('td', {}, c.class),
            h('td', { class: 'num' }, fmtNum(c.precision, 3)),
            h('td', { class: 'num' }, fmtNum(c.recall, 3)),
            h('td', { class: 'num' }, fmtNum(f1(c), 3)),
            h('td', { class: 'num' }, c.support),
          ),
        ),
      ),
    ),
  )
}

/** The misclassified samples an evaluation kept, shown through the dataset's samples route. */
function misclassifiedView(ev) {
  const list = ev?.misclassified ?? []
  const box = h('div', { class: 'samples', id: 'misclassified' })
  if (!list.length || !ev.file) return null
  api(`/v1/admin/files/${enc(ev.file)}`)
    .then(async (f) => {
      if (f.format !== 'idx' && f.format !== 'image_zip') {
        box.replaceChildren(
          table(
            null,
            'Misclassified rows',
            ['Row', 'True', 'Predicted', 'Probability'],
            h(
              'tbody',
              {},
              list.map((m) =>
                h(
                  'tr',
                  {},
                  h('td', {}, m.index),
                  h('td', {}, m.true),
                  h('td', {}, m.predicted),
                  h('td', {}, fmtNum(m.probability, 3)),
                ),
              ),
            ),
          ),
        )
        return
      }
      const shown = list.slice(0, 24)
      const samples = await api(
        `/v1/admin/files/${enc(ev.file)}/samples?indices=${shown.map((m) => m.index).join(',')}`,
      )
      const byIndex = new Map(samples.data.map((s) => [s.index, s]))
      box.replaceChildren(
        ...shown.map((m) => {
          const s = byIndex.get(m.index)
          return h(
            'figure',
            { class: 'wrong', dataset: { index: String(m.index), label: m.true, predicted: m.predicted } },
            s
              ? h('img', {
                  src: `data:image/png;base64,${s.png_base64}`,
                  alt: `sample ${m.index}: true ${m.true}, predicted ${m.predicted}`,
                })
              : null,
            h('figcaption', {}, `${m.true} → ${m.predicted} (${Math.round(m.probability * 100)}%)`),
          )
        }),
      )
    })
    .catch((err) => box.replaceChildren(errorBox(err)))
  return h('div', {}, h('h3', {}, `Misclassified samples (${list.length}, most confident first)`), box)
}

function checkpointsView(job, checkpoints) {
  if (!checkpoints.length) return h('p', { class: 'empty' }, 'No checkpoints: one is written at the end of each epoch.')
  return table(
    'checkpoints-table',
    null,
    ['Checkpoint', 'Epoch', 'Step', 'Metrics', 'Actions'],
    h(
      'tbody',
      {},
      checkpoints.map((c) =>
        h(
          'tr',
          { dataset: { ckpt: c.id } },
          h('td', { class: 'mono' }, c.id),
          h('td', {}, c.epoch),
          h('td', {}, c.step_number ?? c.step),
          h(
            'td',
            { class: 'mono' },
            Object.entries(c.metrics ?? {})
              .filter(([, v]) => typeof v === 'number')
              .map(([k, v]) => `${k} ${fmtNum(v)}`)
              .join(', '),
          ),
          h(
            'td',
            {},
            h(
              'a',
              {
                href: `/v1/admin/jobs/${enc(job.id)}/checkpoints/${enc(c.id)}/content`,
                class: 'download',
                download: '',
              },
              'Download',
            ),
            ' ',
            h(
              'a',
              {
                class: 'start-from',
                href: `#/new-job?project=${enc(job.project?.id ?? job.organization_id)}&model=${enc(c.id)}&training_file=${enc(job.training_file)}${job.validation_file ? `&validation_file=${enc(job.validation_file)}` : ''}`,
              },
              'Start a job from it',
            ),
          ),
        ),
      ),
    ),
  )
}

async function jobPage(id) {
  let job = await api(`/v1/admin/jobs/${enc(id)}`)
  const status = h('span', { id: 'job-status', role: 'status', 'aria-live': 'polite' })
  const cancelBtn = h('button', { class: 'danger', id: 'cancel-job', type: 'button' }, 'Stop job')
  const retryBtn = h('button', { id: 'retry-job', type: 'button' }, 'Retry')
  const pauseBtn = h('button', { id: 'pause-job', type: 'button' }, 'Pause')
  const resumeBtn = h('button', { id: 'resume-job', type: 'button' }, 'Resume')
  const cloneLink = h('a', { id: 'clone-job', href: `#/new-job?from=${enc(id)}` }, 'Clone and edit')
  const download = h('a', { id: 'download-model' }, 'Download model')
  const actionError = h('p', { class: 'error-text', role: 'alert' })
  const bannerSlot = h('div')
  const details = h('div', { class: 'grid', id: 'job-details' })
  const hp = h('tbody')
  const log = h('div', {
    class: 'log',
    id: 'event-log',
    role: 'log',
    tabindex: '0',
    'aria-label': 'Events, newest first',
  })
  const lossEl = h('div', { class: 'panel', id: 'loss-chart' })
  const accEl = h('div', { class: 'panel', id: 'accuracy-chart' })
  const stepEl = h('div', { class: 'panel', id: 'step-chart' })
  const evalEl = h('div', { class: 'panel', id: 'job-evaluation' }, h('h2', {}, 'Evaluation'))
  const ckptEl = h('div', { class: 'panel', id: 'job-checkpoints' }, h('h2', {}, 'Checkpoints'))
  let lastStatus = job.status

  const render = () => {
    status.replaceChildren(badge(job.status))
    if (job.status !== lastStatus) {
      announce(`Job ${job.id} is ${job.status}`)
      lastStatus = job.status
    }
    const finished = TERMINAL.includes(job.status)
    cancelBtn.hidden = finished
    cancelBtn.disabled = job.status === 'cancelling'
    // a running job asked to pause stays running ("pausing") until its mid-epoch checkpoint is written
    const pausing = job.status === 'running' && job.status_reason === 'pausing'
    pauseBtn.hidden = !PAUSABLE.includes(job.status)
    pauseBtn.disabled = pausing
    pauseBtn.textContent = pausing ? 'Pausing…' : 'Pause'
    resumeBtn.hidden = job.status !== 'paused'
    const canRetry = ['failed', 'cancelled'].includes(job.status)
    const notRetryable = job.error?.retryable === false
    retryBtn.hidden = !canRetry || notRetryable
    cloneLink.hidden = false
    download.hidden = !job.fine_tuned_model
    if (job.fine_tuned_model) download.href = `/v1/admin/models/${enc(job.fine_tuned_model)}/content`
    bannerSlot.replaceChildren(...[failureBanner(job)].filter(Boolean))
    const p = job.progress
    const elapsed = jobDuration(job)
    details.replaceChildren(
      kv(
        'Project',
        h('a', { href: `#/projects/${enc(job.organization_id)}` }, job.project?.name ?? job.organization_id),
      ),
      kv('Base model', modelLink(job.model)),
      kv('Method', methodOf(job)),
      kv('Suffix', job.suffix),
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
          { id: 'progress' },
          progressBar(p?.fraction, 'training progress', true),
          p
            ? ` epoch ${p.epoch ?? '?'} / ${p.total_epochs ?? '?'}, ${Math.round((p.fraction ?? 0) * 100)}%`
            : ' not started',
        ),
      ),
      kv(finished ? 'Duration' : 'Elapsed', fmtDuration(elapsed), 'elapsed'),
      kv('ETA', job.status === 'running' ? fmtEta(job.estimated_finish) : '—', 'eta'),
      kv('Samples / s', p?.samples_per_second ? Math.round(p.samples_per_second) : '—'),
      kv('Queue position', job.status === 'queued' ? (job.queue_position ?? '—') : '—', 'queue-position'),
      kv('Created', fmtTime(job.created_at)),
      kv('Started', fmtTime(job.started_at)),
      kv('Finished', fmtTime(job.finished_at)),
      kv('Status reason', job.status_reason),
      kv('Retry of', job.retry_of_job_id ? jobLink(job.retry_of_job_id) : null),
      kv('Sweep', job.sweep_id ? sweepLink(job.sweep_id) : null, 'job-sweep'),
      kv(
        'Sweep values',
        job.sweep_values
          ? Object.entries(job.sweep_values)
              .map(([k, v]) => `${k} = ${fmtSample(v)}`)
              .join(', ')
          : null,
      ),
      kv('Started from checkpoint', job.init_checkpoint),
    )
    const rows = hyperparameterRows(job)
    hp.replaceChildren(
      ...Object.entries(rows).map(([k, v]) =>
        h(
          'tr',
          {},
          h('th', { scope: 'row', class: 'mono' }, k),
          h('td', { class: 'mono' }, k.endsWith('teacher_model') && v ? modelLink(v) : fmtValue(v)),
        ),
      ),
    )
  }

  cancelBtn.addEventListener('click', async () => {
    if (!confirm(`Stop training job ${job.id}? Press OK to stop it, Cancel to keep it running.`)) return
    actionError.textContent = ''
    try {
      job = { ...job, ...(await api(`/v1/admin/jobs/${enc(job.id)}/cancel`, { method: 'POST' })) }
      render()
    } catch (err) {
      actionError.textContent = err.message
    }
  })
  for (const [btn, action] of [
    [pauseBtn, 'pause'],
    [resumeBtn, 'resume'],
  ]) {
    btn.addEventListener('click', async () => {
      actionError.textContent = ''
      btn.disabled = true
      try {
        job = { ...job, ...(await api(`/v1/admin/jobs/${enc(job.id)}/${action}`, { method: 'POST' })) }
      } catch (err) {
        actionError.textContent = err.message
      }
      btn.disabled = false
      render()
    })
  }
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
    h(
      'h1',
      {},
      'Job ',
      h('span', { class: 'mono' }, job.id),
      status,
      h('span', { class: 'actions' }, download, pauseBtn, resumeBtn, cancelBtn, retryBtn, cloneLink),
    ),
    actionError,
    bannerSlot,
    h('div', { class: 'panel' }, details),
    h('div', { class: 'charts' }, lossEl, accEl),
    h('div', { class: 'stack' }, stepEl),
    h('div', { class: 'charts' }, evalEl, ckptEl),
    h(
      'div',
      { class: 'charts' },
      h(
        'div',
        { class: 'panel' },
        h('h2', {}, 'Hyperparameters and method (as resolved)'),
        h('div', { class: 'scroll' }, h('table', { id: 'hyperparameters' }, hp)),
      ),
      h('div', { class: 'panel' }, h('h2', {}, 'Events'), log),
    ),
  )
  render()
  const sync = `job-${id}`
  const emptyText = () =>
    job.status === 'queued'
      ? `Queued${job.queue_position ? ` (position ${job.queue_position})` : ''}: curves appear when training starts.`
      : job.status === 'failed' && !job.started_at
        ? 'The job failed before training: no curves.'
        : 'No epochs yet.'
  const loss = lineChart(lossEl, {
    title: 'Loss per epoch',
    xLabel: 'epoch',
    sync,
    empty: emptyText(),
    series: [
      { label: 'loss', color: PALETTE[0] },
      { label: 'val_loss', color: PALETTE[1], dash: [6, 4] },
    ],
  })
  const acc = lineChart(accEl, {
    title: 'Accuracy per epoch',
    xLabel: 'epoch',
    sync,
    empty: emptyText(),
    series: [
      { label: 'accuracy', color: PALETTE[2] },
      { label: 'val_accuracy', color: PALETTE[3], dash: [6, 4] },
    ],
  })
  const steps = lineChart(stepEl, {
    title: 'Per step (one batch every 10 steps)',
    xLabel: 'step',
    sync: `${sync}-steps`,
    empty: job.status === 'queued' || job.status === 'validating_files' ? emptyText() : 'No batch metrics yet.',
    series: [
      { label: 'batch_loss', color: PALETTE[0] },
      { label: 'batch_accuracy', color: PALETTE[2] },
    ],
  })
  let lastX = 0
  let stepsBuffer = new Map()
  const pushSteps = (rows) => {
    for (const r of rows) {
      const s = stepsBuffer.get(r.step) ?? {}
      s[r.name] = r.value
      stepsBuffer.set(r.step, s)
    }
    const xs = [...stepsBuffer.keys()].sort((a, b) => a - b)
    steps.set(xs, [
      xs.map((x) => stepsBuffer.get(x).batch_loss ?? null),
      xs.map((x) => stepsBuffer.get(x).batch_accuracy ?? null),
    ])
  }

  const loadSide = async () => {
    const [ckpts, model] = await Promise.all([
      api(`/v1/admin/jobs/${enc(id)}/checkpoints?limit=100`).catch(() => ({ data: [] })),
      job.fine_tuned_model ? api(`/v1/admin/models/${enc(job.fine_tuned_model)}`).catch(() => null) : null,
    ])
    ckptEl.replaceChildren(h('h2', {}, 'Checkpoints'), checkpointsView(job, ckpts.data))
    evalEl.replaceChildren(
      h('h2', {}, 'Evaluation'),
      evaluationView(model?.metrics?.evaluation, {
        empty:
          job.status === 'succeeded'
            ? 'This job kept no validation data, so there is no evaluation.'
            : 'The evaluation appears when the job succeeds.',
      }),
      misclassifiedView(model?.metrics?.evaluation),
    )
  }
  loadSide().catch(() => {})

  // The live stream replays every event from the start, then follows: metrics events feed the epoch charts,
  // `metrics` messages the per-step chart, and `job` messages replace the job (queue position included).
  const es = new EventSource(`/v1/admin/jobs/${enc(id)}/events?stream=true`)
  es.addEventListener('event', (m) => {
    const e = JSON.parse(m.data)
    log.prepend(h('div', { class: e.level }, `${new Date(e.created_at * 1000).toLocaleString()}  ${e.message}`))
    if (e.type === 'metrics' && e.data) {
      const x = typeof e.data.epoch === 'number' && e.data.epoch > lastX ? e.data.epoch : lastX + 1
      lastX = x
      loss.push(x, e.data)
      acc.push(x, e.data)
    }
    // The transfer engine announces its fine-tuning phase with the unfrozen blocks: mark the boundary.
    if (Array.isArray(e.data?.blocks)) {
      loss.mark(lastX + 0.5)
      acc.mark(lastX + 0.5)
    }
    if (e.level === 'error') announce(e.message)
  })
  es.addEventListener('metrics', (m) => pushSteps(JSON.parse(m.data).data))
  es.addEventListener('job', (m) => {
    job = { ...job, ...JSON.parse(m.data), project: job.project, metrics: job.metrics }
    render()
  })
  es.addEventListener('done', async () => {
    es.close()
    job = await api(`/v1/admin/jobs/${enc(id)}`).catch(() => job)
    render()
    loadSide().catch(() => {})
  })
  // elapsed time and ETA tick between server updates
  const ticker = setInterval(() => {
    if (!TERMINAL.includes(job.status)) {
      const el = document.getElementById('elapsed')
      if (el) el.textContent = fmtDuration(jobDuration(job))
    }
  }, 1000)
  return () => {
    es.close()
    clearInterval(ticker)
    stepsBuffer = new Map()
    for (const c of [loss, acc, steps]) c.destroy()
  }
}

// ---------- compare runs ----------

async function comparePage() {
  const { params } = hashParts()
  const ids = (params.get('jobs') ?? '').split(',').map(decodeURIComponent).filter(Boolean)
  if (ids.length < 2 || ids.length > 8) {
    show(
      h('h1', {}, 'Compare runs'),
      h(
        'p',
        { class: 'empty' },
        'Pick 2 to 8 jobs on the Jobs page (the boxes in the first column), then press Compare.',
      ),
    )
    return
  }
  const jobs = await Promise.all(ids.map((id) => api(`/v1/admin/jobs/${enc(id)}`)))
  const metrics = await Promise.all(ids.map((id) => api(`/v1/admin/jobs/${enc(id)}/metrics`)))
  const label = (j, i) => `${i + 1}: ${j.suffix ?? j.id.slice(6, 14)}`
  const series = (name) =>
    jobs.map((j, i) => ({
      label: `${label(j, i)} ${name}`,
      key: `${j.id}`,
      color: PALETTE[i % PALETTE.length],
      dash: name.startsWith('val') ? [6, 4] : undefined,
    }))
  const lossEl = h('div', { class: 'panel', id: 'compare-loss' })
  const accEl = h('div', { class: 'panel', id: 'compare-accuracy' })
  // the differing hyperparameters and method fields
  const flat = jobs.map((j) => ({
    method: methodOf(j),
    model: j.model,
    training_file: j.training_file,
    validation_file: j.validation_file,
    seed: j.seed,
    ...hyperparameterRows(j),
  }))
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort()
  const differing = keys.filter((k) => new Set(flat.map((f) => JSON.stringify(f[k] ?? null))).size > 1)
  const same = keys.filter((k) => !differing.includes(k))
  const head = [
    'Setting',
    ...jobs.map((j, i) =>
      h(
        'th',
        { scope: 'col' },
        h('a', { href: `#/jobs/${enc(j.id)}`, class: 'mono' }, label(j, i)),
        h('div', { class: 'muted' }, j.project.name),
      ),
    ),
  ]
  const final = (j) => j.metrics?.final
  const best = (j) => j.metrics?.best
  const metricRows = [
    ['status', (j) => j.status],
    ['final epoch', (j) => final(j)?.epoch],
    ['final val_accuracy', (j) => fmtNum(final(j)?.val_accuracy)],
    ['final val_loss', (j) => fmtNum(final(j)?.val_loss)],
    ['best val_accuracy', (j) => fmtNum(best(j)?.val_accuracy ?? best(j)?.accuracy)],
    ['best epoch', (j) => best(j)?.epoch],
    ['duration', (j) => fmtDuration(jobDuration(j))],
  ]
  const share = h('input', {
    readonly: true,
    id: 'share-url',
    value: location.href,
    'aria-label': 'Shareable link to this comparison',
    size: 40,
  })
  show(
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    h('h1', {}, `Compare ${jobs.length} runs`),
    h('p', {}, h('label', { class: 'field' }, 'Shareable link', share)),
    h('div', { class: 'charts' }, lossEl, accEl),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Final and best metrics'),
      table(
        'metrics-table',
        null,
        head,
        h(
          'tbody',
          {},
          metricRows.map(([name, f]) =>
            h(
              'tr',
              { dataset: { key: name } },
              h('th', { scope: 'row' }, name),
              jobs.map((j) => h('td', { class: 'num' }, f(j) ?? '—')),
            ),
          ),
        ),
      ),
    ),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, differing.length ? 'Settings that differ' : 'All settings are the same'),
      table(
        'diff-table',
        null,
        head,
        h(
          'tbody',
          {},
          differing.map((k) =>
            h(
              'tr',
              { dataset: { key: k } },
              h('th', { scope: 'row', class: 'mono' }, k),
              flat.map((f) => h('td', { class: 'mono' }, fmtValue(f[k]))),
            ),
          ),
        ),
      ),
      same.length
        ? h(
            'details',
            {},
            h('summary', {}, `${same.length} settings shared by all`),
            h('p', { class: 'mono' }, same.map((k) => `${k} = ${fmtValue(flat[0][k])}`).join('; ')),
          )
        : null,
    ),
  )
  // every job's epochs on one x axis: one series per job, aligned by epoch
  const byJob = metrics.map((list) => {
    const epochs = new Map()
    for (const r of list.data) {
      if (r.name.startsWith('batch_')) continue
      const e = epochs.get(r.epoch) ?? {}
      e[r.name] = r.value
      epochs.set(r.epoch, e)
    }
    return epochs
  })
  const xs = [...new Set(byJob.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b)
  const lossChart = lineChart(lossEl, {
    title: 'Validation loss (loss without validation data)',
    xLabel: 'epoch',
    series: series('val_loss'),
    sync: 'compare',
  })
  const accChart = lineChart(accEl, {
    title: 'Validation accuracy (accuracy without validation data)',
    xLabel: 'epoch',
    series: series('val_accuracy'),
    sync: 'compare',
  })
  const column = (name, fallback) => byJob.map((m) => xs.map((x) => m.get(x)?.[name] ?? m.get(x)?.[fallback] ?? null))
  lossChart.set(xs, column('val_loss', 'loss'))
  accChart.set(xs, column('val_accuracy', 'accuracy'))
  lossEl.dataset.series = String(jobs.length)
  return () => {
    lossChart.destroy()
    accChart.destroy()
  }
}

// ---------- sweeps ----------

const SWEEP_STATUSES = ['running', 'succeeded', 'failed', 'cancelled']
/** How often the sweeps list, and a running sweep's page without its event stream, refresh. */
const SWEEP_POLL_MS = 3000
/** With the stream, the page re-reads only for the running trials' epochs (curves, epochs run). */
const SWEEP_STREAM_POLL_MS = 10_000
/** Trials whose curves the sweep page compares. */
const TOP_CURVES = 5
const sweepLink = (id) => h('a', { href: `#/sweeps/${enc(id)}`, class: 'mono' }, id)
/** ASHA's losers are cancelled jobs with status_reason early_terminated: the table names them so. */
const trialStatus = (t) =>
  t.status === 'cancelled' && t.statusReason === 'early_terminated' ? 'early_terminated' : t.status
/** Sampled values read best with four significant digits (a log-scale learning rate is 0.000231, not 0.0002). */
const fmtSample = (v) =>
  typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(4))) : fmtValue(v)
const lowerIsBetter = (sweep) => sweep.goal === 'minimize'
/** Trials are counted from 1 on the page, as the sweep's event messages count them (the API's `trial` is 0-based). */
const trialName = (index) => `#${index + 1}`

/** One trial of the admin list (`job` nested as every job route shows it, plus its last and best epoch). */
function trialOf(t) {
  return {
    trial: t.trial,
    jobId: t.job.id,
    status: t.job.status,
    statusReason: t.job.status_reason,
    values: t.values ?? {},
    metric: typeof t.metric_value === 'number' ? t.metric_value : null,
    epochs: t.metrics?.final?.epoch ?? null,
    bestEpoch: t.metrics?.best?.epoch ?? null,
    model: t.job.fine_tuned_model,
    baseline: t.baseline === true,
  }
}

/**
 * How a search-space path is drawn on an x axis: over its whole domain (the range, or the listed numbers),
 * `log` for a log-scale range (or listed positive numbers spanning 100x or more), `categories` for a list
 * holding anything but numbers (plotted at their index).
 */
function axisOf(dim) {
  if (!dim?.values) return { log: dim?.scale === 'log', categories: null, domain: [dim?.min, dim?.max] }
  if (!dim.values.every((v) => typeof v === 'number'))
    return { log: false, categories: dim.values.map((v) => fmtSample(v)), domain: null }
  const min = Math.min(...dim.values)
  const max = Math.max(...dim.values)
  return { log: min > 0 && max / min >= 100, categories: null, domain: [min, max] }
}

/**
 * A uPlot scatter of points `{x, y, label}`: `log` gives a log x axis, `categories` labels x = 0..n-1 with
 * those names. A data-table fallback holds the same points; the container's data-points counts them.
 */
function scatterChart(
  container,
  { title, xLabel, yLabel, log = false, categories = null, domain = null, color = PALETTE[0] },
) {
  const ink = cssVar('--muted') || '#596170'
  const grid = cssVar('--grid') || '#e5e7eb'
  const holder = h('div', {
    class: 'chart',
    role: 'img',
    'aria-label': `${title} chart; the data table below holds the values`,
  })
  const emptyEl = h('p', { class: 'empty' }, 'No trial has a metric value yet.')
  const tbody = h('tbody')
  container.replaceChildren(
    h('h3', {}, title),
    emptyEl,
    holder,
    h('details', {}, h('summary', {}, `${title}: data table`), table(null, title, ['Trial', xLabel, yLabel], tbody)),
  )
  const axis = { stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid } }
  const pad = (min, max, logScale = false) => {
    if (!Number.isFinite(min) || !Number.isFinite(max)) return logScale ? [1, 10] : [0, 1]
    if (logScale) return [min / 1.5, max * 1.5]
    const span = max - min || Math.abs(max) || 1
    return [min - span * 0.08, max + span * 0.08]
  }
  const xAxis = categories
    ? {
        ...axis,
        label: xLabel,
        splits: () => categories.map((_, i) => i),
        values: (_u, vals) => vals.map((v) => categories[v] ?? ''),
      }
    : // uPlot's own labels keep 3 decimals: a learning rate of 0.0001 would read 0
      { ...axis, label: xLabel, values: (_u, vals) => vals.map((v) => (v === null ? '' : fmtSample(v))) }
  const plot = new window.uPlot(
    {
      width: Math.max(240, container.clientWidth - 4 || 420),
      height: 200,
      scales: {
        x: categories
          ? { time: false, range: [-0.5, categories.length - 0.5] }
          : {
              time: false,
              distr: log ? 3 : 1,
              log: 10,
              // the whole search space (fixed: every sampled value lies in it), so where the trials fell shows
              range: domain ? pad(domain[0], domain[1], log) : (_u, min, max) => pad(min, max, log),
            },
        y: { range: (_u, min, max) => pad(min, max) },
      },
      axes: [xAxis, { ...axis, label: yLabel, size: 56 }],
      series: [
        { label: xLabel, value: (_u, v) => (v === null ? '--' : categories ? (categories[v] ?? '') : fmtSample(v)) },
        {
          label: yLabel,
          stroke: color,
          fill: color,
          paths: () => null,
          points: { show: true, size: 9, fill: color, stroke: color },
          value: (_u, v) => fmtNum(v),
        },
      ],
      legend: { live: true },
      cursor: { points: { size: 12 } },
    },
    [[], []],
    holder,
  )
  const ro = new ResizeObserver(() => {
    const w = Math.max(240, container.clientWidth - 4)
    if (Math.abs(plot.width - w) > 2) plot.setSize({ width: w, height: 200 })
  })
  ro.observe(container)
  let last = ''
  return {
    /** replaces the points (uPlot wants x ascending; equal x values are fine) */
    set(points) {
      const sorted = [...points].sort((a, b) => a.x - b.x)
      const key = JSON.stringify(sorted)
      if (key === last) return
      last = key
      plot.setData([sorted.map((p) => p.x), sorted.map((p) => p.y)])
      container.dataset.points = String(sorted.length)
      emptyEl.hidden = sorted.length > 0
      holder.style.visibility = sorted.length ? 'visible' : 'hidden'
      tbody.replaceChildren(
        ...sorted.map((p) =>
          h(
            'tr',
            {},
            h('td', {}, p.label),
            h('td', {}, categories ? categories[p.x] : fmtSample(p.x)),
            h('td', {}, fmtNum(p.y)),
          ),
        ),
      )
    },
    destroy() {
      ro.disconnect()
      plot.destroy()
    },
  }
}

function sweepFilters(params, projects) {
  const select = (name, label, options) =>
    h(
      'label',
      {},
      label,
      h(
        'select',
        { name },
        h('option', { value: '' }, 'any'),
        options.map(([v, t]) => h('option', { value: v }, t)),
      ),
    )
  const form = h(
    'form',
    { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
    select(
      'status',
      'Status',
      SWEEP_STATUSES.map((s) => [s, s]),
    ),
    select(
      'project',
      'Project',
      projects.map((p) => [p.id, p.name]),
    ),
  )
  for (const el of form.querySelectorAll('select')) el.value = params.get(el.name) ?? ''
  return form
}

async function sweepsPage() {
  const { params } = hashParts()
  const projects = (await api('/v1/admin/projects')).data
  const projectName = new Map(projects.map((p) => [p.id, p.name]))
  const filters = sweepFilters(params, projects)
  const fields = [...filters.querySelectorAll('select')]
  let after = params.get('after') ?? ''
  let back = (params.get('back') ?? '').split(',').filter(Boolean)
  const tbody = h('tbody', { id: 'sweeps-body' })
  const note = h('p', { class: 'muted', role: 'status' })
  const prev = h('button', { id: 'sweeps-prev', type: 'button' }, '← Previous')
  const next = h('button', { id: 'sweeps-next', type: 'button' }, 'Next →')
  let lastList = null
  const writeUrl = () => {
    const p = new URLSearchParams()
    for (const el of fields) p.set(el.name, el.value)
    p.set('after', after)
    p.set('back', back.join(','))
    setParams(p)
  }
  const row = (s) => {
    const p = s.progress ?? {}
    return h(
      'tr',
      { dataset: { sweep: s.id, status: s.status } },
      h('td', {}, sweepLink(s.id), s.suffix ? h('div', { class: 'muted' }, s.suffix) : null),
      h('td', { dataset: { col: 'status' } }, badge(s.status)),
      h('td', {}, s.project?.name ?? projectName.get(s.project_id ?? s.organization_id) ?? '—'),
      h('td', { class: 'mono' }, s.model),
      h('td', {}, `${s.strategy}${s.early_termination ? ' + ASHA' : ''}`),
      h('td', {}, `${s.metric} (${s.goal === 'minimize' ? 'min' : 'max'})`),
      h(
        'td',
        { dataset: { col: 'progress' } },
        progressBar((p.trials_done ?? 0) / Math.max(1, p.trials_total ?? 1), `trials done of ${s.id}`),
        ` ${p.trials_done ?? 0} / ${p.trials_total ?? '?'}`,
      ),
      h('td', { class: 'num', dataset: { col: 'best' } }, fmtNum(s.best_trial?.metric_value)),
      h('td', { dataset: { col: 'best-model' } }, modelLink(s.best_model)),
      h('td', {}, fmtTime(s.created_at)),
    )
  }
  const refresh = async () => {
    const q = new URLSearchParams({ limit: '20' })
    for (const el of fields) if (el.value) q.set(el.name, el.value)
    if (after) q.set('after', after)
    lastList = await api(`/v1/admin/sweeps?${q}`)
    syncRows(tbody, lastList.data, (s) => s.id, row)
    note.textContent = lastList.data.length
      ? `${lastList.data.length} sweep(s) on this page${lastList.has_more ? '; more on the next page' : ''}, newest first. Live every ${SWEEP_POLL_MS / 1000} s.`
      : 'No sweeps match these filters: create one with POST /v1/fine_tuning/sweeps or refit sweeps create.'
    prev.disabled = !after
    next.disabled = !lastList.has_more
  }
  let stop = () => {}
  const restart = () => {
    stop()
    stop = poll(refresh, SWEEP_POLL_MS, (err) => {
      note.textContent = err.message
    })
  }
  for (const el of fields)
    el.addEventListener('change', () => {
      after = ''
      back = []
      writeUrl()
      restart()
    })
  next.addEventListener('click', () => {
    back.push(after || '-')
    after = lastList.data.at(-1).id
    writeUrl()
    restart()
  })
  prev.addEventListener('click', () => {
    const b = back.pop()
    after = b && b !== '-' ? b : ''
    writeUrl()
    restart()
  })
  show(
    h('h1', {}, 'Sweeps'),
    filters,
    table(
      'sweeps-table',
      'Hyperparameter sweeps',
      [
        'Sweep',
        'Status',
        'Project',
        'Base model',
        'Strategy',
        'Metric',
        'Trials done',
        h('th', { scope: 'col', class: 'num' }, 'Best value'),
        'Best model',
        'Created',
      ],
      tbody,
    ),
    h('div', { class: 'row' }, prev, next),
    note,
  )
  restart()
  return () => stop()
}

function searchSpaceTable(sweep) {
  return table(
    'search-space',
    null,
    ['Path', 'Sampled from', 'Scale', 'Type'],
    h(
      'tbody',
      {},
      Object.entries(sweep.search_space ?? {}).map(([path, dim]) =>
        h(
          'tr',
          { dataset: { path } },
          h('th', { scope: 'row', class: 'mono' }, path),
          h(
            'td',
            { class: 'mono' },
            dim.values ? `values ${dim.values.map(fmtSample).join(', ')}` : `range ${dim.min} … ${dim.max}`,
          ),
          h('td', {}, dim.values ? '—' : (dim.scale ?? 'linear')),
          h('td', {}, dim.values ? '—' : (dim.type ?? 'float')),
        ),
      ),
    ),
  )
}

async function sweepPage(id) {
  const base = `/v1/admin/sweeps/${enc(id)}`
  let sweep = await api(base)
  const paths = Object.keys(sweep.search_space ?? {})
  const { params } = hashParts()
  let sort = params.get('sort') ?? 'metric'
  let dir = params.get('dir') ?? (lowerIsBetter(sweep) ? 'asc' : 'desc')
  let trials = []
  const status = h('span', { id: 'sweep-status', role: 'status', 'aria-live': 'polite' })
  const cancelBtn = h('button', { class: 'danger', id: 'cancel-sweep', type: 'button' }, 'Cancel sweep')
  const actionError = h('p', { class: 'error-text', role: 'alert' })
  const details = h('div', { class: 'grid', id: 'sweep-details' })
  const log = h('div', {
    class: 'log',
    id: 'sweep-log',
    role: 'log',
    tabindex: '0',
    'aria-label': 'Sweep events, newest first',
  })
  const note = h('p', { class: 'muted', id: 'trials-note' })
  const tbody = h('tbody', { id: 'trials-body' })
  const curvesEl = h('div', { class: 'panel', id: 'sweep-curves' })
  const scatterEls = paths.map((_, i) => h('div', { class: 'panel', id: `scatter-${i}`, dataset: { path: paths[i] } }))
  let lastStatus = sweep.status

  // ---- trials table, sorted here: the page holds every trial (at most MAX_SWEEP_TRIALS) ----
  const sortValue = (t, key) => {
    if (key === 'trial') return t.trial
    if (key === 'metric') return t.metric
    if (key === 'status') return trialStatus(t)
    return t.values?.[key.slice(2)] ?? null
  }
  const compare = (a, b) => {
    const x = sortValue(a, sort)
    const y = sortValue(b, sort)
    // trials without a value go last in both directions, like the run table
    if (x === null || x === undefined) return y === null || y === undefined ? a.trial - b.trial : 1
    if (y === null || y === undefined) return -1
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y))
    return (dir === 'asc' ? c : -c) || a.trial - b.trial
  }
  const headRow = h('tr')
  const sortHeader = (key, label, num = false) =>
    h(
      'th',
      { scope: 'col', class: num ? 'num' : undefined, 'aria-sort': 'none' },
      h(
        'button',
        {
          type: 'button',
          class: 'sort',
          dataset: { sort: key },
          onclick: () => {
            // first click on a column: best first for the metric, ascending for the rest
            dir =
              sort === key
                ? dir === 'asc'
                  ? 'desc'
                  : 'asc'
                : key === 'metric' && !lowerIsBetter(sweep)
                  ? 'desc'
                  : 'asc'
            sort = key
            const p = new URLSearchParams()
            p.set('sort', sort)
            p.set('dir', dir)
            setParams(p)
            renderTrials()
          },
        },
        label,
      ),
    )
  headRow.append(
    sortHeader('trial', 'Trial', true),
    h('th', { scope: 'col' }, 'Job'),
    sortHeader('status', 'Status'),
    ...paths.map((p) => sortHeader(`v:${p}`, p, true)),
    sortHeader('metric', sweep.metric, true),
    h('th', { scope: 'col', class: 'num' }, 'Epochs run'),
    h('th', { scope: 'col', class: 'num' }, 'Best epoch'),
    h('th', { scope: 'col' }, 'Model'),
  )
  const renderTrials = () => {
    for (const th of headRow.querySelectorAll('th[aria-sort]'))
      th.setAttribute(
        'aria-sort',
        th.querySelector('button').dataset.sort === sort ? (dir === 'asc' ? 'ascending' : 'descending') : 'none',
      )
    const bestJob = sweep.best_trial?.job_id
    syncRows(
      tbody,
      [...trials].sort(compare),
      (t) => t.jobId,
      (t) =>
        h(
          'tr',
          { dataset: { job: t.jobId, trial: String(t.trial), status: trialStatus(t) } },
          h(
            'td',
            { class: 'num' },
            trialName(t.trial),
            t.jobId === bestJob ? [' ', h('span', { class: 'badge succeeded', id: 'best-badge' }, 'best')] : null,
            // the baseline trial runs a lone job's defaults: what the sweep's best is measured against
            t.baseline
              ? [' ', h('span', { class: 'badge', id: 'baseline-badge', title: "a lone job's defaults" }, 'baseline')]
              : null,
          ),
          h('td', {}, jobLink(t.jobId)),
          h('td', { dataset: { col: 'status' } }, badge(trialStatus(t))),
          ...paths.map((p) => h('td', { class: 'num mono', dataset: { path: p } }, fmtSample(t.values?.[p]))),
          h('td', { class: 'num', dataset: { col: 'metric' } }, fmtNum(t.metric)),
          h('td', { class: 'num', dataset: { col: 'epochs' } }, t.epochs ?? '—'),
          h('td', { class: 'num', dataset: { col: 'best-epoch' } }, t.bestEpoch ?? '—'),
          h('td', { dataset: { col: 'model' } }, modelLink(t.model)),
        ),
    )
    const pending = (sweep.progress?.trials_total ?? 0) - trials.length
    note.textContent = `${trials.length} trial(s) started${pending > 0 ? `, ${pending} not started yet` : ''}. ${sweep.metric} is each succeeded trial's value at the epoch its model holds.`
  }

  // ---- value-vs-metric scatter per path ----
  const scatters = paths.map((path, i) =>
    scatterChart(scatterEls[i], {
      title: `${path} vs ${sweep.metric}${axisOf(sweep.search_space[path]).log ? ' (log x)' : ''}`,
      xLabel: path,
      yLabel: sweep.metric,
      color: PALETTE[i % PALETTE.length],
      ...axisOf(sweep.search_space[path]),
    }),
  )
  const renderScatters = () =>
    paths.forEach((path, i) => {
      const { categories } = axisOf(sweep.search_space[path])
      const points = []
      for (const t of trials) {
        const v = t.values?.[path]
        if (t.metric === null || v === undefined) continue
        const x = categories ? categories.indexOf(fmtSample(v)) : v
        if (typeof x === 'number' && x >= 0) points.push({ x, y: t.metric, label: trialName(t.trial) })
      }
      scatters[i].set(points)
    })

  // ---- the top trials' curves: the sweep metric per epoch, from each trial job's epoch rows ----
  let curves = null
  let curvesKey = ''
  const metricRows = new Map() // job id -> {status, epochs, rows}
  const renderCurves = async () => {
    const ranked = trials
      .filter((t) => t.metric !== null)
      .sort((a, b) => (lowerIsBetter(sweep) ? a.metric - b.metric : b.metric - a.metric))
    // while few trials have finished, running ones fill the chart so it shows progress
    const top = [...ranked, ...trials.filter((t) => t.metric === null && t.status === 'running')].slice(0, TOP_CURVES)
    await Promise.all(
      top.map(async (t) => {
        // read again only when the trial ran another epoch (or ended) since the last read
        const known = metricRows.get(t.jobId)
        if (known && known.status === t.status && known.epochs === t.epochs) return
        const list = await api(`/v1/admin/jobs/${enc(t.jobId)}/metrics?name=${enc(sweep.metric)}`)
        metricRows.set(t.jobId, { status: t.status, epochs: t.epochs, rows: list.data })
      }),
    )
    const key = top.map((t) => t.jobId).join(',')
    if (key !== curvesKey || !curves) {
      curves?.destroy()
      curvesKey = key
      curves = lineChart(curvesEl, {
        title: `${sweep.metric} per epoch, top ${top.length || TOP_CURVES} trials`,
        xLabel: 'epoch',
        empty: 'No trial has finished an epoch yet.',
        series: top.map((t, i) => ({
          label: `${trialName(t.trial)}${t.metric === null ? ` (${trialStatus(t)})` : ''}`,
          color: PALETTE[i % PALETTE.length],
          dash: t.metric === null ? [6, 4] : undefined,
        })),
      })
    }
    const byJob = top.map((t) => new Map((metricRows.get(t.jobId)?.rows ?? []).map((r) => [r.epoch, r.value])))
    const xs = [...new Set(byJob.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b)
    curves.set(
      xs,
      byJob.map((m) => xs.map((x) => m.get(x) ?? null)),
    )
    curvesEl.dataset.series = String(top.length)
  }

  const renderSweep = () => {
    status.replaceChildren(badge(sweep.status))
    if (sweep.status !== lastStatus) {
      announce(`Sweep ${sweep.id} is ${sweep.status}`)
      lastStatus = sweep.status
    }
    cancelBtn.hidden = sweep.status !== 'running'
    const p = sweep.progress ?? {}
    const running = trials.filter((t) => !TERMINAL.includes(t.status)).length
    const method = sweep.method?.type ?? 'transfer'
    const asha = sweep.early_termination
    details.replaceChildren(
      kv(
        'Project',
        sweep.project
          ? h('a', { href: `#/projects/${enc(sweep.project.id)}` }, sweep.project.name)
          : (sweep.project_id ?? '—'),
      ),
      kv('Base model', modelLink(sweep.model)),
      kv('Method', method),
      kv('Strategy', sweep.strategy, 'sweep-strategy'),
      kv('Metric', `${sweep.metric}, ${sweep.goal}`, 'sweep-metric'),
      kv(
        'Progress',
        h(
          'span',
          { id: 'sweep-progress' },
          progressBar((p.trials_done ?? 0) / Math.max(1, p.trials_total ?? 1), 'trials done', true),
          ` ${p.trials_done ?? 0} of ${p.trials_total ?? '?'} done, ${p.trials_succeeded ?? 0} succeeded, ${running} unfinished`,
        ),
      ),
      kv('Trials at once (max_parallel)', sweep.max_parallel),
      kv(
        'Early termination',
        asha ? `ASHA: first rung at epoch ${asha.min_epochs}, keep the top 1/${asha.reduction_factor}` : 'off',
      ),
      kv('Keep every trial’s model', sweep.keep_all_models ? 'yes' : 'no (only the best)'),
      kv('Seed', sweep.seed),
      kv('Training file', fileLink(sweep.training_file)),
      kv('Validation file', fileLink(sweep.validation_file)),
      kv(
        'Best trial',
        sweep.best_trial
          ? h(
              'span',
              {},
              `${trialName(sweep.best_trial.trial)} `,
              jobLink(sweep.best_trial.job_id),
              ` ${sweep.metric} ${fmtNum(sweep.best_trial.metric_value)}`,
            )
          : null,
        'best-trial',
      ),
      kv('Best model', modelLink(sweep.best_model), 'best-model'),
      kv('Created', fmtTime(sweep.created_at)),
      kv('Finished', fmtTime(sweep.finished_at)),
      kv('Status reason', sweep.status_reason),
    )
  }

  const loadTrials = async () => {
    const all = []
    let after = ''
    for (;;) {
      const page = await api(`${base}/trials?limit=100${after ? `&after=${enc(after)}` : ''}`)
      all.push(...page.data.map(trialOf))
      if (!page.has_more || !page.data.length) break
      after = all.at(-1).jobId
    }
    trials = all
  }
  // settled: the sweep ended and so did every trial (a cancelled sweep's trials may still be stopping)
  const settled = () => sweep.status !== 'running' && trials.every((t) => TERMINAL.includes(t.status))
  const refresh = async () => {
    ;[sweep] = await Promise.all([api(base), loadTrials()])
    renderSweep()
    renderTrials()
    renderScatters()
    await renderCurves()
  }
  // one refresh at a time; a request for one during a refresh runs one more after it
  let busy = null
  let again = false
  const refreshSoon = () => {
    if (busy) {
      again = true
      return busy
    }
    busy = (async () => {
      try {
        do {
          again = false
          await refresh()
        } while (again)
      } catch (err) {
        if (err?.status !== 401) actionError.textContent = errorText(err)
      } finally {
        busy = null
      }
    })()
    return busy
  }

  cancelBtn.addEventListener('click', async () => {
    if (
      !confirm(
        `Cancel sweep ${sweep.id}? No new trial starts and its unfinished trials are cancelled. Press OK to cancel it, Cancel to keep it running.`,
      )
    )
      return
    actionError.textContent = ''
    cancelBtn.disabled = true
    try {
      sweep = { ...sweep, ...(await api(`${base}/cancel`, { method: 'POST' })) }
      renderSweep()
      await refreshSoon()
    } catch (err) {
      actionError.textContent = errorText(err)
    }
    cancelBtn.disabled = false
  })

  show(
    h('p', {}, h('a', { href: '#/sweeps' }, '← Sweeps')),
    h('h1', {}, 'Sweep ', h('span', { class: 'mono' }, sweep.id), status, h('span', { class: 'actions' }, cancelBtn)),
    actionError,
    sweep.suffix ? h('p', { class: 'muted' }, `Suffix ${sweep.suffix}`) : null,
    h('div', { class: 'panel' }, details),
    h('div', { class: 'panel' }, h('h2', {}, 'Search space'), searchSpaceTable(sweep)),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Trials'),
      h(
        'div',
        { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': 'Trials' },
        h(
          'table',
          { id: 'trials-table' },
          h('caption', { class: 'skip' }, `Trials of ${sweep.id}`),
          h('thead', {}, headRow),
          tbody,
        ),
      ),
      note,
    ),
    h('h2', {}, `Sampled value vs ${sweep.metric}`),
    h('div', { class: 'charts', id: 'scatters' }, scatterEls),
    h('div', { class: 'stack' }, curvesEl),
    h('div', { class: 'panel' }, h('h2', {}, 'Sweep events'), log),
  )
  renderSweep()
  await refreshSoon()

  // The sweep's stream replays its events from the start, then follows: each event (a trial started or
  // ended, an early termination, a new best) and each `sweep` message (status, progress) refreshes the
  // page; `done` comes after the sweep ended. A running trial's epochs are no sweep events, so the page
  // also re-reads every SWEEP_STREAM_POLL_MS while something runs (every SWEEP_POLL_MS without a stream).
  let streaming = false
  const es = new EventSource(`${base}/events?stream=true`)
  es.addEventListener('open', () => {
    streaming = true
  })
  es.addEventListener('event', (m) => {
    const e = JSON.parse(m.data)
    log.prepend(
      h(
        'div',
        { class: e.level, dataset: { type: e.type } },
        `${new Date(e.created_at * 1000).toLocaleString()}  ${e.message}`,
      ),
    )
    if (e.level === 'error') announce(e.message)
    refreshSoon()
  })
  es.addEventListener('sweep', (m) => {
    sweep = { ...sweep, ...JSON.parse(m.data), project: sweep.project }
    renderSweep()
    refreshSoon()
  })
  es.addEventListener('done', () => {
    es.close()
    streaming = false
    refreshSoon()
  })
  es.addEventListener('error', () => {
    // refused (e.g. too many streams) or gone: polling alone keeps the page current
    if (es.readyState === EventSource.CLOSED) streaming = false
  })
  let lastPoll = Date.now()
  const timer = setInterval(() => {
    if (settled() || Date.now() - lastPoll < (streaming ? SWEEP_STREAM_POLL_MS : SWEEP_POLL_MS)) return
    lastPoll = Date.now()
    refreshSoon()
  }, 1000)
  return () => {
    es.close()
    clearInterval(timer)
    curves?.destroy()
    for (const s of scatters) s.destroy()
  }
}

// ---------- new job (values from the API's dry run) ----------

async function newJobPage() {
  const { params } = hashParts()
  const from = params.get('from') ? await api(`/v1/admin/jobs/${enc(params.get('from'))}`) : null
  const projects = (await api('/v1/admin/projects')).data
  if (!projects.length) {
    show(h('h1', {}, 'New job'), h('p', { class: 'empty' }, 'Create a project first (Projects page).'))
    return
  }
  const models = (await api('/v1/admin/models?limit=100')).data
  const method = from ? methodOf(from) : (params.get('method') ?? 'transfer')
  const config = from?.method?.[method] ?? {}
  const hpFrom = from?.hyperparameters ?? {}
  const initial = {
    project: from?.organization_id ?? params.get('project') ?? projects[0].id,
    model: from?.init_checkpoint ?? from?.model ?? params.get('model') ?? 'mnist-cnn',
    training_file: from?.training_file ?? params.get('training_file') ?? '',
    validation_file: from?.validation_file ?? params.get('validation_file') ?? '',
    method,
    suffix: from?.suffix ?? '',
    seed: from?.seed ?? '',
    teacher_model: config.teacher_model ?? '',
  }
  const input = (name, label, attrs = {}) => {
    const el = h('input', { name, id: `f-${name}`, ...attrs })
    const hint = h('span', { class: 'resolved', id: `r-${name}`, 'aria-live': 'polite' })
    return { el, node: h('label', { class: 'field', for: `f-${name}` }, label, el, hint), hint }
  }
  const selectField = (name, label, options) => {
    const el = h(
      'select',
      { name, id: `f-${name}` },
      options.map(([v, t]) => h('option', { value: v }, t)),
    )
    const hint = h('span', { class: 'resolved', id: `r-${name}` })
    return { el, node: h('label', { class: 'field', for: `f-${name}` }, label, el, hint), hint }
  }
  const f = {
    project: selectField(
      'project',
      'Project',
      projects.map((p) => [p.id, p.name]),
    ),
    model: input('model', 'Model or checkpoint', { list: 'model-ids', required: true }),
    training_file: selectField('training_file', 'Training file', []),
    validation_file: selectField('validation_file', 'Validation file', []),
    method: selectField(
      'method',
      'Method',
      ['transfer', 'supervised', 'distillation'].map((m) => [m, m]),
    ),
    teacher_model: input('teacher_model', 'Teacher model (distillation)', { list: 'model-ids' }),
    n_epochs: input('n_epochs', 'Epochs', { placeholder: 'auto', inputmode: 'numeric' }),
    batch_size: input('batch_size', 'Batch size', { placeholder: 'auto', inputmode: 'numeric' }),
    learning_rate: input('learning_rate', 'Learning rate', { placeholder: 'auto', inputmode: 'decimal' }),
    validation_split: input('validation_split', 'Validation split', { placeholder: 'auto', inputmode: 'decimal' }),
    optimizer: selectField('optimizer', 'Optimizer', [
      ['auto', 'auto'],
      ['adam', 'adam'],
      ['sgd', 'sgd'],
      ['rmsprop', 'rmsprop'],
    ]),
    seed: input('seed', 'Seed', { placeholder: 'random', inputmode: 'numeric' }),
    suffix: input('suffix', 'Suffix', { placeholder: 'optional' }),
  }
  for (const [k, v] of Object.entries(initial)) if (f[k]) f[k].el.value = v
  for (const k of ['n_epochs', 'batch_size', 'learning_rate', 'validation_split'])
    if (from && hpFrom[k] !== undefined) f[k].el.value = String(hpFrom[k])
  if (from && hpFrom.optimizer) f.optimizer.el.value = hpFrom.optimizer
  const datalist = h(
    'datalist',
    { id: 'model-ids' },
    models.map((m) => h('option', { value: m.id })),
  )
  const preview = h('div', { id: 'job-preview', 'aria-live': 'polite' })
  const error = h('p', { class: 'error-text', role: 'alert', id: 'job-form-error' })
  const submit = h('button', { class: 'primary', type: 'submit', id: 'create-job' }, 'Create job')

  const loadFiles = async () => {
    const list = await api(
      `/v1/admin/files?project=${enc(f.project.el.value)}&status=processed&purpose=fine-tune&limit=100`,
    )
    const opts = list.data.map((x) => [x.id, `${x.filename} (${x.stats?.rows ?? '?'} rows, ${x.id})`])
    const keep = [
      f.training_file.el.value || initial.training_file,
      f.validation_file.el.value || initial.validation_file,
    ]
    f.training_file.el.replaceChildren(...opts.map(([v, t]) => h('option', { value: v }, t)))
    f.validation_file.el.replaceChildren(
      h('option', { value: '' }, 'none (split the training file)'),
      ...opts.map(([v, t]) => h('option', { value: v }, t)),
    )
    if (keep[0] && opts.some(([v]) => v === keep[0])) f.training_file.el.value = keep[0]
    f.validation_file.el.value = keep[1] && opts.some(([v]) => v === keep[1]) ? keep[1] : ''
    if (!opts.length) error.textContent = 'This project has no processed dataset yet: upload one on the Datasets page.'
  }

  const body = () => {
    const num = (k) => {
      const v = f[k].el.value.trim()
      return v === '' || v === 'auto' ? undefined : Number(v)
    }
    const hyperparameters = {}
    for (const k of ['n_epochs', 'batch_size', 'learning_rate', 'validation_split'])
      if (num(k) !== undefined) hyperparameters[k] = num(k)
    if (f.optimizer.el.value !== 'auto') hyperparameters.optimizer = f.optimizer.el.value
    if (from?.hyperparameters?.early_stopping) hyperparameters.early_stopping = from.hyperparameters.early_stopping
    const type = f.method.el.value
    const extra = {}
    if (from && methodOf(from) === type)
      for (const [k, v] of Object.entries(config))
        if (k !== 'hyperparameters' && k !== 'teacher_model' && v !== null) extra[k] = v
    if (type === 'distillation') extra.teacher_model = f.teacher_model.el.value.trim()
    const b = {
      model: f.model.el.value.trim(),
      training_file: f.training_file.el.value,
      method: { type, [type]: { ...extra, hyperparameters } },
    }
    if (f.validation_file.el.value) b.validation_file = f.validation_file.el.value
    if (num('seed') !== undefined) b.seed = num('seed')
    if (f.suffix.el.value.trim()) b.suffix = f.suffix.el.value.trim()
    return b
  }

  let seq = 0
  const runPreview = async () => {
    const mine = ++seq
    error.textContent = ''
    for (const x of Object.values(f)) x.hint.textContent = ''
    if (!f.training_file.el.value || !f.model.el.value.trim()) return
    try {
      const job = await api(`/v1/admin/projects/${enc(f.project.el.value)}/fine_tuning/jobs?dry_run=true`, {
        method: 'POST',
        body: body(),
      })
      if (mine !== seq) return
      const hp = job.hyperparameters
      for (const k of ['n_epochs', 'batch_size', 'learning_rate', 'validation_split', 'optimizer'])
        f[k].hint.textContent = hp[k] === undefined ? '' : `→ ${fmtValue(hp[k])}`
      const m = job.method[job.method.type] ?? {}
      preview.replaceChildren(
        h('h2', {}, 'As it would run'),
        h(
          'p',
          { class: 'muted' },
          `Starts ${job.status === 'queued' ? 'queued' : 'once its files are validated'}, on ${job.model}${job.init_checkpoint ? ` from ${job.init_checkpoint}` : ''}.`,
        ),
        h(
          'div',
          { class: 'scroll' },
          h(
            'table',
            { id: 'resolved' },
            h(
              'tbody',
              {},
              Object.entries(hyperparameterRows(job)).map(([k, v]) =>
                h(
                  'tr',
                  { dataset: { key: k } },
                  h('th', { scope: 'row', class: 'mono' }, k),
                  h('td', { class: 'mono' }, fmtValue(v)),
                ),
              ),
            ),
          ),
        ),
        Object.keys(m).length ? null : null,
      )
    } catch (err) {
      if (mine !== seq || err.status === 401) return
      error.textContent = errorText(err)
      const field = err.param?.split('.').at(-1)
      if (field && f[field]) f[field].hint.textContent = `✗ ${err.message}`
      preview.replaceChildren()
    }
  }
  let timer = null
  const schedule = () => {
    clearTimeout(timer)
    timer = setTimeout(runPreview, 300)
  }
  const form = h(
    'form',
    {
      class: 'stacked',
      id: 'job-form',
      oninput: schedule,
      onchange: schedule,
      onsubmit: async (e) => {
        e.preventDefault()
        error.textContent = ''
        submit.disabled = true
        try {
          const job = await api(`/v1/admin/projects/${enc(f.project.el.value)}/fine_tuning/jobs`, {
            method: 'POST',
            body: body(),
          })
          location.hash = `#/jobs/${enc(job.id)}`
        } catch (err) {
          error.textContent = errorText(err)
        } finally {
          submit.disabled = false
        }
      },
    },
    Object.values(f).map((x) => x.node),
    h('div', {}, submit),
  )
  f.project.el.addEventListener('change', () =>
    loadFiles()
      .then(runPreview)
      .catch((err) => (error.textContent = err.message)),
  )
  const syncTeacher = () => {
    f.teacher_model.node.hidden = f.method.el.value !== 'distillation'
  }
  f.method.el.addEventListener('change', syncTeacher)
  syncTeacher()
  show(
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    h('h1', {}, from ? `Clone ${from.id}` : 'New job'),
    h(
      'p',
      { class: 'muted' },
      'Leave a field empty for "auto": the resolved value appears beside it, computed by the API for this data.',
    ),
    h('div', { class: 'panel' }, form, datalist, error),
    h('div', { class: 'panel' }, preview),
  )
  await loadFiles()
  await runPreview()
  form.dataset.ready = 'true'
  return () => clearTimeout(timer)
}

// ---------- datasets ----------

async function datasetsPage() {
  const projects = (await api('/v1/admin/projects')).data
  const tbody = h('tbody')
  const note = h('p', { class: 'muted', role: 'status' })
  const result = h('div', { id: 'upload-result', 'aria-live': 'polite' })
  const project = h(
    'select',
    { name: 'project', id: 'upload-project' },
    projects.map((p) => h('option', { value: p.id }, p.name)),
  )
  const file = h('input', { type: 'file', name: 'file', id: 'upload-file', required: true })
  const format = h(
    'select',
    { name: 'format', id: 'upload-format' },
    h('option', { value: '' }, 'detect'),
    ['csv', 'jsonl', 'image_zip', 'idx'].map((x) => h('option', { value: x }, x)),
  )
  const labelColumn = h('input', { name: 'label_column', id: 'upload-label-column', placeholder: 'label' })
  let watching = null
  const watch = (id) => {
    watching = id
    const tick = async () => {
      if (watching !== id) return
      const f = await api(`/v1/admin/files/${enc(id)}`)
      result.replaceChildren(
        h(
          'p',
          {},
          'Uploaded ',
          fileLink(f.id),
          ' ',
          badge(f.status),
          f.status === 'processed' ? ` ${f.stats?.rows ?? '?'} rows, ${f.stats?.classes?.length ?? '?'} classes.` : '',
        ),
        f.error ? validationError(f.error) : null,
      )
      if (f.status === 'uploaded') setTimeout(tick, 1000)
      else announce(`Dataset ${f.id} is ${f.status}`)
    }
    tick().catch((err) => result.replaceChildren(errorBox(err)))
  }
  const form = h(
    'form',
    {
      class: 'stacked',
      id: 'upload-form',
      onsubmit: async (e) => {
        e.preventDefault()
        const fd = new FormData()
        fd.append('purpose', 'fine-tune')
        if (format.value) fd.append('format', format.value)
        if (labelColumn.value.trim()) fd.append('label_column', labelColumn.value.trim())
        fd.append('file', file.files[0])
        result.replaceChildren(h('p', {}, 'Uploading…'))
        try {
          const up = await api(`/v1/admin/projects/${enc(project.value)}/files`, { method: 'POST', form: fd })
          watch(up.id)
        } catch (err) {
          result.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, errorText(err)))
        }
      },
    },
    h('label', { class: 'field', for: 'upload-project' }, 'Project', project),
    h('label', { class: 'field', for: 'upload-file' }, 'File (CSV, JSONL, zip of images or IDX)', file),
    h('label', { class: 'field', for: 'upload-format' }, 'Format', format),
    h('label', { class: 'field', for: 'upload-label-column' }, 'CSV label column', labelColumn),
    h(
      'div',
      {},
      h('button', { class: 'primary', type: 'submit', id: 'upload-submit', disabled: !projects.length }, 'Upload'),
    ),
  )
  show(
    h('h1', {}, 'Datasets'),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Upload a dataset'),
      projects.length ? form : h('p', { class: 'empty' }, 'Create a project first.'),
      result,
    ),
    table(
      'files-table',
      null,
      ['File', 'Project', 'Name', 'Format', 'Status', 'Rows', 'Classes', 'Size', 'Created'],
      tbody,
    ),
    note,
  )
  const stop = poll(
    async () => {
      const list = await api('/v1/admin/files?limit=100')
      syncRows(
        tbody,
        list.data,
        (f) => f.id,
        (f) =>
          h(
            'tr',
            { dataset: { file: f.id } },
            h('td', {}, fileLink(f.id)),
            h('td', {}, f.project.name),
            h('td', {}, f.filename),
            h('td', {}, f.format ?? '—'),
            h('td', {}, badge(f.status)),
            h('td', { class: 'num' }, f.stats?.rows ?? '—'),
            h('td', { class: 'num' }, f.stats?.classes?.length ?? '—'),
            h('td', { class: 'num' }, fmtBytes(f.bytes)),
            h('td', {}, fmtTime(f.created_at)),
          ),
      )
      note.textContent = list.data.length ? '' : 'No datasets yet: upload one above.'
    },
    5000,
    (err) => {
      note.textContent = err.message
    },
  )
  return () => {
    watching = null
    stop()
  }
}

function validationError(error) {
  return h(
    'div',
    { class: 'banner', role: 'alert', id: 'validation-error' },
    h('strong', {}, `Validation error: ${error.code}`),
    h('p', {}, error.message),
    h(
      'ul',
      {},
      (error.details ?? []).map((d) =>
        h('li', {}, `${[d.line && `line ${d.line}`, d.entry, d.field].filter(Boolean).join(' ')}: ${d.message}`),
      ),
    ),
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
  const histEl = h('div', { class: 'panel', id: 'class-histogram' })
  const samples = h('div', { class: 'samples', id: 'samples' })
  const images = f.format === 'idx' || f.format === 'image_zip'
  show(
    h('p', {}, h('a', { href: '#/datasets' }, '← Datasets')),
    h(
      'h1',
      {},
      'Dataset ',
      h('span', { class: 'mono' }, f.id),
      badge(f.status),
      h(
        'span',
        { class: 'actions' },
        f.status === 'processed'
          ? h('a', { href: `#/new-job?project=${enc(f.project.id)}&training_file=${enc(f.id)}` }, 'Train on it')
          : null,
      ),
    ),
    h(
      'div',
      { class: 'panel grid' },
      kv('Project', h('a', { href: `#/projects/${enc(f.project.id)}` }, f.project.name)),
      kv('File name', f.filename),
      kv('Format', f.format),
      kv('Size', fmtBytes(f.bytes)),
      kv('Rows', s?.rows),
      kv('Image shape', s?.image_shape ? s.image_shape.join(' × ') : null),
      kv('Features', s?.feature_count),
      kv('Classes', s?.classes?.length),
      kv('Created', fmtTime(f.created_at)),
    ),
    f.error ? validationError(f.error) : null,
    s?.classes?.length ? histEl : null,
    images ? h('div', { class: 'panel' }, h('h2', {}, 'Samples'), samples) : null,
  )
  const plot = s?.classes?.length ? barChart(histEl, 'Samples per class', s.classes, classCounts(s)) : null
  if (images && f.status === 'processed') {
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

// ---------- models ----------

async function modelsPage() {
  const { params } = hashParts()
  const projects = (await api('/v1/admin/projects')).data
  const kind = h(
    'select',
    { name: 'kind', id: 'model-kind' },
    h('option', { value: '' }, 'any'),
    ['fine_tuned', 'uploaded', 'builtin', 'architecture'].map((k) => h('option', { value: k }, k)),
  )
  kind.value = params.get('kind') ?? ''
  const tbody = h('tbody')
  const refresh = async () => {
    const list = await api(`/v1/admin/models?limit=100${kind.value ? `&kind=${kind.value}` : ''}`)
    syncRows(
      tbody,
      list.data,
      (m) => m.id,
      (m) =>
        h(
          'tr',
          { dataset: { model: m.id } },
          h('td', {}, modelLink(m.id)),
          h('td', {}, m.kind),
          h('td', {}, m.project?.name ?? '(built-in)'),
          h('td', {}, m.base_model ? modelLink(m.base_model) : '—'),
          h('td', {}, m.fine_tuning_job ? jobLink(m.fine_tuning_job) : '—'),
          h('td', { class: 'num' }, m.classes?.length ?? '—'),
          h('td', { class: 'num' }, fmtNum(valMetric(m.metrics?.final))),
          h('td', { class: 'num' }, fmtBytes(m.bytes)),
          h('td', {}, fmtTime(m.created_at)),
        ),
    )
  }
  kind.addEventListener('change', () => {
    const p = new URLSearchParams()
    p.set('kind', kind.value)
    setParams(p)
    refresh().catch(() => {})
  })
  const result = h('div', { id: 'model-upload-result', 'aria-live': 'polite' })
  const fields = {
    project: h(
      'select',
      { name: 'project', id: 'mu-project' },
      projects.map((p) => h('option', { value: p.id }, p.name)),
    ),
    file: h('input', { type: 'file', name: 'file', id: 'mu-file', required: true, accept: '.zip' }),
    input_shape: h('input', { name: 'input_shape', id: 'mu-input_shape', placeholder: '[28,28,1]', required: true }),
    classes: h('input', { name: 'classes', id: 'mu-classes', placeholder: '["a","b"]' }),
    feature_layer: h('input', { name: 'feature_layer', id: 'mu-feature_layer' }),
    preprocessing: h('input', { name: 'preprocessing', id: 'mu-preprocessing', placeholder: '{"scale":1,"offset":0}' }),
  }
  const form = h(
    'form',
    {
      class: 'stacked',
      id: 'model-upload-form',
      onsubmit: async (e) => {
        e.preventDefault()
        const fd = new FormData()
        for (const k of ['input_shape', 'classes', 'feature_layer', 'preprocessing'])
          if (fields[k].value.trim()) fd.append(k, fields[k].value.trim())
        fd.append('file', fields.file.files[0])
        try {
          const m = await api(`/v1/admin/projects/${enc(fields.project.value)}/models`, { method: 'POST', form: fd })
          result.replaceChildren(h('p', {}, 'Uploaded ', modelLink(m.id)))
          refresh().catch(() => {})
        } catch (err) {
          result.replaceChildren(h('p', { class: 'error-text', role: 'alert' }, errorText(err)))
        }
      },
    },
    [
      ['project', 'Project'],
      ['file', 'Zip of model.json and weights'],
      ['input_shape', 'Input shape (JSON)'],
      ['classes', 'Classes (JSON)'],
      ['feature_layer', 'Feature layer'],
      ['preprocessing', 'Preprocessing (JSON)'],
    ].map(([k, label]) => h('label', { class: 'field', for: `mu-${k}` }, label, fields[k])),
    h('div', {}, h('button', { class: 'primary', type: 'submit', disabled: !projects.length }, 'Upload model')),
  )
  show(
    h('h1', {}, 'Models'),
    h('div', { class: 'filters' }, h('label', {}, 'Kind', kind)),
    table(
      'models-table',
      null,
      ['Model', 'Kind', 'Project', 'Base model', 'Job', 'Classes', 'Final val', 'Size', 'Created'],
      tbody,
    ),
    h('details', { class: 'panel' }, h('summary', {}, 'Upload a TF.js model'), form, result),
  )
  await refresh()
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
        Object.entries(m)
          .filter(([, v]) => typeof v !== 'object')
          .map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'mono num' }, fmtNum(v)))),
      ),
    ),
  )
}

/** Try a model: an image or a feature row -> top-k classes; or a dataset's sample images, mistakes marked. */
function playground(m) {
  const image = (m.input_shape ?? []).length === 3
  const out = h('ol', { id: 'predictions', 'aria-live': 'polite' })
  const error = h('p', { class: 'error-text', role: 'alert' })
  const topK = Math.min(3, m.classes?.length ?? 3)
  const showPredictions = (list) =>
    out.replaceChildren(
      ...list.data[0].predictions.map((p) =>
        h('li', { dataset: { class: p.class } }, `${p.class}: ${(p.probability * 100).toFixed(1)}%`),
      ),
    )
  const predict = async (inputs) => {
    error.textContent = ''
    try {
      return await api(`/v1/admin/models/${enc(m.id)}/predictions`, { method: 'POST', body: { inputs, top_k: topK } })
    } catch (err) {
      error.textContent = errorText(err)
      throw err
    }
  }
  const toBase64 = (file) =>
    new Promise((resolve, reject) => {
      const r = new FileReader()
      r.onload = () => resolve(String(r.result).split(',')[1])
      r.onerror = () => reject(r.error)
      r.readAsDataURL(file)
    })
  const preview = h('img', { id: 'predict-preview', alt: 'the image sent for prediction', hidden: true })
  const useFile = async (file) => {
    if (!file) return
    const b64 = await toBase64(file)
    preview.src = `data:${file.type || 'image/png'};base64,${b64}`
    preview.hidden = false
    showPredictions(await predict([{ image: b64 }]))
  }
  let single
  if (image) {
    const picker = h('input', {
      type: 'file',
      accept: 'image/png,image/jpeg',
      id: 'predict-file',
      onchange: (e) => useFile(e.target.files[0]).catch(() => {}),
    })
    const zone = h(
      'div',
      {
        class: 'dropzone',
        ondragover: (e) => {
          e.preventDefault()
          zone.classList.add('over')
        },
        ondragleave: () => zone.classList.remove('over'),
        ondrop: (e) => {
          e.preventDefault()
          zone.classList.remove('over')
          useFile(e.dataTransfer.files[0]).catch(() => {})
        },
      },
      h('label', { for: 'predict-file' }, 'Drop a PNG or JPEG here, or pick one: '),
      picker,
    )
    single = h('div', {}, zone, preview)
  } else {
    const row = h('textarea', {
      id: 'feature-row',
      rows: 2,
      cols: 40,
      placeholder: `${m.input_shape?.[0] ?? 'n'} numbers, comma-separated`,
    })
    single = h(
      'div',
      {},
      h('label', { for: 'feature-row' }, 'Feature row'),
      h('div', {}, row),
      h(
        'button',
        {
          type: 'button',
          id: 'predict-button',
          onclick: async () => {
            const features = row.value
              .split(/[\s,;]+/)
              .filter(Boolean)
              .map(Number)
            showPredictions(await predict([{ features }]).catch(() => ({ data: [{ predictions: [] }] })))
          },
        },
        'Predict',
      ),
    )
  }
  // over a dataset's sample images: the predicted class beside the label, mistakes outlined
  const grid = h('div', { class: 'samples', id: 'sample-results' })
  const dataset = h('select', { id: 'sample-dataset' })
  const runBtn = h('button', { type: 'button', id: 'run-samples' }, 'Run on 12 samples')
  const summary = h('p', { id: 'sample-summary', 'aria-live': 'polite' })
  if (image)
    api('/v1/admin/files?status=processed&limit=100')
      .then((list) => {
        const imgs = list.data.filter((f) => f.format === 'idx' || f.format === 'image_zip')
        dataset.replaceChildren(
          ...imgs.map((f) => h('option', { value: f.id }, `${f.filename} (${f.project.name}, ${f.id})`)),
        )
        if (m.training_file && imgs.some((f) => f.id === m.training_file)) dataset.value = m.training_file
        runBtn.disabled = !imgs.length
      })
      .catch(() => {})
  runBtn.addEventListener('click', async () => {
    summary.textContent = ''
    grid.replaceChildren(h('p', {}, 'Predicting…'))
    try {
      const samples = (await api(`/v1/admin/files/${enc(dataset.value)}/samples?n=12`)).data
      const res = await predict(samples.map((s) => ({ image: s.png_base64 })))
      let wrong = 0
      grid.replaceChildren(
        ...samples.map((s, i) => {
          const top = res.data[i].predictions[0]
          const ok = top.class === s.label
          if (!ok) wrong++
          return h(
            'figure',
            { class: ok ? 'right' : 'wrong', dataset: { label: s.label, predicted: top.class } },
            h('img', {
              src: `data:image/png;base64,${s.png_base64}`,
              alt: `sample ${s.index}, class ${s.label}, predicted ${top.class}`,
            }),
            h('figcaption', {}, `${s.label} → ${top.class}${ok ? '' : ' ✗'}`),
          )
        }),
      )
      summary.textContent = `${samples.length - wrong} of ${samples.length} right; mistakes are outlined in red.`
    } catch (err) {
      grid.replaceChildren(errorBox(err))
    }
  })
  return h(
    'div',
    { class: 'panel', id: 'playground' },
    h('h2', {}, 'Playground'),
    single,
    out,
    error,
    image
      ? h(
          'div',
          {},
          h('h3', {}, 'On sample images of a dataset'),
          h('div', { class: 'row' }, h('label', { class: 'field', for: 'sample-dataset' }, 'Dataset', dataset), runBtn),
          summary,
          grid,
        )
      : null,
  )
}

async function modelPage(id) {
  const [m, lineage, evals] = await Promise.all([
    api(`/v1/admin/models/${enc(id)}`),
    api(`/v1/admin/models/${enc(id)}/lineage`),
    api(`/v1/admin/models/${enc(id)}/evaluations?limit=20`).catch(() => ({ data: [] })),
  ])
  const downloadable = m.kind !== 'architecture'
  const predictable = downloadable && m.classes?.length
  const ev = m.metrics?.evaluation
  const evalList = h('div', { id: 'evaluations' })
  const renderEvals = (list) =>
    evalList.replaceChildren(
      ...(list.length
        ? list.map((e) =>
            h(
              'details',
              { dataset: { evaluation: e.id }, open: e === list[0] ? true : undefined },
              h(
                'summary',
                {},
                `${e.id} on ${e.file}: ${e.status}${e.result ? `, accuracy ${fmtNum(e.result.accuracy)}` : ''}`,
              ),
              e.result
                ? evaluationView({ ...e.result, file: e.file }, { id: `evaluation-${e.id}` })
                : e.error
                  ? errorBox(`${e.error.code}: ${e.error.message}`)
                  : h('p', { class: 'muted' }, 'Running…'),
            ),
          )
        : [h('p', { class: 'empty' }, 'No evaluations on other files yet.')]),
    )
  renderEvals(evals.data)
  const evalFile = h('input', { id: 'eval-file', placeholder: 'file-…', 'aria-label': 'File id to evaluate on' })
  const evalError = h('p', { class: 'error-text', role: 'alert' })
  const ckpts = lineage.job
    ? await api(`/v1/admin/jobs/${enc(lineage.job.id)}/checkpoints?limit=100`).catch(() => ({ data: [] }))
    : { data: [] }
  let evalTimer = null
  show(
    h('p', {}, h('a', { href: '#/models' }, '← Models')),
    h(
      'h1',
      {},
      'Model ',
      h('span', { class: 'mono' }, m.id),
      badge(m.kind),
      h(
        'span',
        { class: 'actions' },
        downloadable
          ? h('a', { href: `/v1/admin/models/${enc(m.id)}/content`, id: 'download-model' }, 'Download')
          : null,
        h(
          'a',
          { href: `#/new-job?model=${enc(m.id)}${m.project ? `&project=${enc(m.project.id)}` : ''}` },
          'Fine-tune it',
        ),
      ),
    ),
    h(
      'div',
      { class: 'panel grid' },
      kv('Project', m.project ? h('a', { href: `#/projects/${enc(m.project.id)}` }, m.project.name) : '(built-in)'),
      kv('Base model', modelLink(m.base_model)),
      kv('Job', m.fine_tuning_job ? jobLink(m.fine_tuning_job) : null),
      kv('Training file', fileLink(m.training_file)),
      kv(
        'Input shape',
        m.input_shape?.join(' × ') ?? (m.kind === 'architecture' ? 'sized from the training data' : null),
      ),
      kv('Classes', m.classes?.join(', ') ?? (m.kind === 'architecture' ? 'taken from the training data' : null)),
      kv('Description', m.description),
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
          i ? h('span', { class: 'muted', 'aria-hidden': 'true' }, '→') : null,
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
          metricsTable(
            'Final epoch (the weights you download, unless early stopping restored the best)',
            m.metrics.final,
          ),
          metricsTable('Best epoch', m.metrics.best),
        )
      : null,
    h(
      'div',
      { class: 'panel', id: 'model-evaluation' },
      h('h2', {}, 'Evaluation at the end of training'),
      evaluationView(ev, { empty: 'No held-out evaluation was made at training time.' }),
      misclassifiedView(ev),
    ),
    predictable ? playground(m) : null,
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Evaluations on files'),
      predictable
        ? h(
            'form',
            {
              class: 'row',
              onsubmit: async (e) => {
                e.preventDefault()
                evalError.textContent = ''
                try {
                  await api(`/v1/admin/models/${enc(m.id)}/evaluations`, {
                    method: 'POST',
                    body: { file: evalFile.value.trim() },
                  })
                  const again = async () => {
                    const list = (await api(`/v1/admin/models/${enc(m.id)}/evaluations?limit=20`)).data
                    renderEvals(list)
                    if (list.some((x) => x.status === 'queued' || x.status === 'running'))
                      evalTimer = setTimeout(again, 1500)
                  }
                  await again()
                } catch (err) {
                  evalError.textContent = errorText(err)
                }
              },
            },
            evalFile,
            h('button', { type: 'submit', id: 'evaluate' }, 'Evaluate'),
          )
        : null,
      evalError,
      evalList,
    ),
    lineage.job
      ? h(
          'div',
          { class: 'panel' },
          h('h2', {}, 'Checkpoints of its job'),
          checkpointsView(
            {
              ...lineage.job,
              id: lineage.job.id,
              project: m.project,
              organization_id: m.project?.id,
              training_file: m.training_file,
              validation_file: lineage.job.validation_file,
            },
            ckpts.data,
          ),
        )
      : null,
  )
  return () => clearTimeout(evalTimer)
}

// ---------- projects, keys, webhooks ----------

async function projectsPage() {
  const list = (await api('/v1/admin/projects')).data
  const usages = await Promise.all(list.map((p) => api(`/v1/admin/projects/${enc(p.id)}/usage`).catch(() => null)))
  const name = h('input', { name: 'name', id: 'project-name', required: true, maxlength: 100 })
  const error = h('p', { class: 'error-text', role: 'alert' })
  show(
    h('h1', {}, 'Projects'),
    h(
      'form',
      {
        class: 'panel row',
        id: 'new-project',
        onsubmit: async (e) => {
          e.preventDefault()
          try {
            const p = await api('/v1/admin/projects', { method: 'POST', body: { name: name.value.trim() } })
            location.hash = `#/projects/${enc(p.id)}`
          } catch (err) {
            error.textContent = errorText(err)
          }
        },
      },
      h('label', { class: 'field', for: 'project-name' }, 'New project name', name),
      h('button', { class: 'primary', type: 'submit' }, 'Create project'),
      error,
    ),
    list.length
      ? table(
          'projects-table',
          null,
          ['Project', 'Id', 'Storage used', 'Storage quota', 'Unfinished jobs', 'Job limit', 'Created'],
          h(
            'tbody',
            {},
            list.map((p, i) =>
              h(
                'tr',
                { dataset: { project: p.id } },
                h('td', {}, h('a', { href: `#/projects/${enc(p.id)}` }, p.name)),
                h('td', { class: 'mono' }, p.id),
                h('td', { class: 'num' }, fmtBytes(usages[i]?.storage_used_bytes)),
                h('td', { class: 'num' }, fmtBytes(usages[i]?.storage_quota_bytes)),
                h('td', { class: 'num' }, usages[i]?.unfinished_jobs ?? '—'),
                h('td', { class: 'num' }, usages[i]?.max_concurrent_jobs ?? '—'),
                h('td', {}, fmtTime(p.created_at)),
              ),
            ),
          ),
        )
      : h('p', { class: 'empty' }, 'No projects yet.'),
  )
}

async function projectPage(id) {
  const project = (await api('/v1/admin/projects')).data.find((p) => p.id === id)
  if (!project) throw new Error(`No project with id '${id}'.`)
  const usageEl = h('div', { class: 'grid', id: 'usage' })
  const keysBody = h('tbody')
  const hooksBody = h('tbody')
  const deliveries = h('div', { id: 'deliveries' })
  const keySecret = h('div', { id: 'key-secret', 'aria-live': 'polite' })
  const hookSecret = h('div', { id: 'webhook-secret', 'aria-live': 'polite' })
  const errors = h('p', { class: 'error-text', role: 'alert' })
  const quota = h('input', {
    name: 'storage_quota_bytes',
    id: 'limit-storage',
    inputmode: 'numeric',
    placeholder: 'server default',
  })
  const jobs = h('input', {
    name: 'max_concurrent_jobs',
    id: 'limit-jobs',
    inputmode: 'numeric',
    placeholder: 'server default',
  })
  const base = `/v1/admin/projects/${enc(id)}`
  const loadUsage = async () => {
    const u = await api(`${base}/usage`)
    usageEl.replaceChildren(
      kv('Storage used', fmtBytes(u.storage_used_bytes), 'usage-storage'),
      kv('Storage quota', fmtBytes(u.storage_quota_bytes)),
      h(
        'div',
        { class: 'kv' },
        h('span', {}, 'Storage'),
        progressBar(u.storage_used_bytes / Math.max(1, u.storage_quota_bytes), 'storage used', true),
      ),
      kv('Unfinished jobs', u.unfinished_jobs, 'usage-jobs'),
      kv('Concurrent job limit', u.max_concurrent_jobs, 'usage-job-limit'),
    )
  }
  const loadKeys = async () => {
    const keys = (await api(`${base}/api_keys`)).data
    syncRows(
      keysBody,
      keys,
      (k) => k.id,
      (k) =>
        h(
          'tr',
          { dataset: { apiKey: k.id } },
          h('td', {}, k.name ?? '—'),
          h('td', { class: 'mono' }, `rk-${k.prefix}.…`),
          h('td', {}, fmtTime(k.created_at)),
          h('td', {}, fmtTime(k.last_used_at)),
          h(
            'td',
            {},
            k.revoked_at
              ? `revoked ${fmtTime(k.revoked_at)}`
              : h('button', { type: 'button', class: 'danger revoke', dataset: { key: k.id } }, 'Revoke'),
          ),
        ),
    )
  }
  const loadHooks = async () => {
    const hooks = (await api(`${base}/webhooks?limit=100`)).data
    syncRows(
      hooksBody,
      hooks,
      (w) => w.id,
      (w) =>
        h(
          'tr',
          { dataset: { webhook: w.id } },
          h('td', { class: 'mono' }, w.url),
          h('td', {}, w.events.join(', ')),
          h('td', {}, fmtTime(w.created_at)),
          h(
            'td',
            {},
            h('button', { type: 'button', class: 'show-deliveries', dataset: { hook: w.id } }, 'Deliveries'),
            ' ',
            h('button', { type: 'button', class: 'danger delete-hook', dataset: { hook: w.id } }, 'Delete'),
          ),
        ),
    )
    if (!hooks.length) deliveries.replaceChildren()
  }
  keysBody.addEventListener('click', async (e) => {
    const key = e.target.dataset?.key
    if (!key || !confirm('Revoke this key? Requests made with it will be refused.')) return
    try {
      await api(`${base}/api_keys/${enc(key)}`, { method: 'DELETE' })
      await loadKeys()
      announce('Key revoked')
    } catch (err) {
      errors.textContent = errorText(err)
    }
  })
  hooksBody.addEventListener('click', async (e) => {
    const hook = e.target.dataset?.hook
    if (!hook) return
    try {
      if (e.target.classList.contains('delete-hook')) {
        if (!confirm('Delete this webhook? Its pending deliveries are given up.')) return
        await api(`${base}/webhooks/${enc(hook)}`, { method: 'DELETE' })
        await loadHooks()
        return
      }
      const list = (await api(`${base}/webhooks/${enc(hook)}/deliveries?limit=50`)).data
      deliveries.replaceChildren(
        h('h3', {}, `Deliveries of ${hook}`),
        list.length
          ? table(
              'deliveries-table',
              null,
              ['Delivery', 'Job', 'Event', 'Status', 'Attempts', 'HTTP', 'Last error', 'Created'],
              h(
                'tbody',
                {},
                list.map((d) =>
                  h(
                    'tr',
                    {},
                    h('td', { class: 'mono' }, d.id),
                    h('td', {}, jobLink(d.job_id)),
                    h('td', {}, d.event),
                    h('td', {}, badge(d.status)),
                    h('td', { class: 'num' }, d.attempts),
                    h('td', { class: 'num' }, d.response_status ?? '—'),
                    h('td', {}, d.last_error ?? ''),
                    h('td', {}, fmtTime(d.created_at)),
                  ),
                ),
              ),
            )
          : h('p', { class: 'empty' }, 'No deliveries yet: one is made when a job of this project ends.'),
      )
    } catch (err) {
      errors.textContent = errorText(err)
    }
  })
  const keyName = h('input', { id: 'key-name', placeholder: 'laptop', maxlength: 100 })
  const hookUrl = h('input', { id: 'webhook-url', placeholder: 'https://example.com/hook', size: 30, required: true })
  const hookEvents = ['succeeded', 'failed', 'cancelled'].map((ev) =>
    h('input', { type: 'checkbox', value: ev, checked: true, id: `hook-${ev}` }),
  )
  show(
    h('p', {}, h('a', { href: '#/projects' }, '← Projects')),
    h(
      'h1',
      {},
      'Project ',
      project.name,
      h('span', { class: 'mono muted' }, project.id),
      h(
        'span',
        { class: 'actions' },
        h('a', { href: `#/jobs?project=${enc(id)}` }, 'Its jobs'),
        h('a', { href: `#/new-job?project=${enc(id)}` }, 'New job'),
      ),
    ),
    errors,
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Usage and limits'),
      usageEl,
      h(
        'form',
        {
          class: 'row',
          id: 'limits-form',
          onsubmit: async (e) => {
            e.preventDefault()
            const v = (el) => (el.value.trim() === '' ? null : Number(el.value.trim()))
            try {
              await api(`${base}/limits`, {
                method: 'PATCH',
                body: { storage_quota_bytes: v(quota), max_concurrent_jobs: v(jobs) },
              })
              await loadUsage()
              announce('Limits saved')
            } catch (err) {
              errors.textContent = errorText(err)
            }
          },
        },
        h('label', { class: 'field', for: 'limit-storage' }, 'Storage quota (bytes)', quota),
        h('label', { class: 'field', for: 'limit-jobs' }, 'Concurrent jobs', jobs),
        h('button', { type: 'submit', id: 'save-limits' }, 'Save limits'),
      ),
    ),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'API keys'),
      h(
        'form',
        {
          class: 'row',
          id: 'new-key',
          onsubmit: async (e) => {
            e.preventDefault()
            try {
              const k = await api(`${base}/api_keys`, {
                method: 'POST',
                body: keyName.value.trim() ? { name: keyName.value.trim() } : {},
              })
              keySecret.replaceChildren(
                h(
                  'p',
                  { class: 'secret' },
                  'Copy this key now, it is not shown again: ',
                  h('code', { class: 'mono', id: 'new-key-value' }, k.key),
                ),
              )
              keyName.value = ''
              await loadKeys()
            } catch (err) {
              errors.textContent = errorText(err)
            }
          },
        },
        h('label', { class: 'field', for: 'key-name' }, 'Name', keyName),
        h('button', { type: 'submit', class: 'primary' }, 'Create key'),
      ),
      keySecret,
      table('keys-table', null, ['Name', 'Key', 'Created', 'Last used', 'Actions'], keysBody),
    ),
    h(
      'div',
      { class: 'panel' },
      h('h2', {}, 'Webhooks'),
      h(
        'form',
        {
          class: 'row',
          id: 'new-webhook',
          onsubmit: async (e) => {
            e.preventDefault()
            try {
              const w = await api(`${base}/webhooks`, {
                method: 'POST',
                body: { url: hookUrl.value.trim(), events: hookEvents.filter((c) => c.checked).map((c) => c.value) },
              })
              hookSecret.replaceChildren(
                h(
                  'p',
                  { class: 'secret' },
                  'Signing secret, shown once: ',
                  h('code', { class: 'mono', id: 'new-webhook-secret' }, w.secret),
                ),
              )
              hookUrl.value = ''
              await loadHooks()
            } catch (err) {
              errors.textContent = errorText(err)
            }
          },
        },
        h('label', { class: 'field', for: 'webhook-url' }, 'URL', hookUrl),
        h(
          'fieldset',
          {},
          h('legend', {}, 'Events'),
          hookEvents.map((c) => h('label', { for: c.id }, c, ` ${c.value} `)),
        ),
        h('button', { type: 'submit', class: 'primary' }, 'Add webhook'),
      ),
      hookSecret,
      table('webhooks-table', null, ['URL', 'Events', 'Created', 'Actions'], hooksBody),
      deliveries,
    ),
  )
  await Promise.all([loadUsage(), loadKeys(), loadHooks()])
}

// ---------- workers and queues ----------

async function workersPage() {
  const tbody = h('tbody')
  const note = h('p', { class: 'muted', role: 'status' })
  show(
    h('h1', {}, 'Workers'),
    table(
      'workers-table',
      null,
      [
        'Worker',
        'Alive',
        'Host',
        'PID',
        'Backend',
        'Class',
        'Last samples/s',
        'Capabilities',
        'Current jobs',
        'Last heartbeat',
      ],
      tbody,
    ),
    note,
  )
  return poll(
    async () => {
      const list = await api('/v1/admin/workers')
      syncRows(
        tbody,
        list.data,
        (w) => w.id,
        (w) =>
          h(
            'tr',
            {},
            h('td', { class: 'mono' }, w.id),
            h('td', {}, badge(w.alive ? 'alive' : 'dead')),
            h('td', {}, w.hostname ?? '—'),
            h('td', {}, w.pid ?? '—'),
            h('td', {}, w.backend ?? '—'),
            h('td', {}, w.resource_class ?? '—'),
            h('td', { class: 'num', title: 'at its latest job' }, w.throughput_samples_per_second ?? '—'),
            h(
              'td',
              {},
              Object.entries(w.capabilities ?? {})
                .map(([k, v]) => `${k}: ${v ? 'yes' : 'no'}`)
                .join(', ') || '—',
            ),
            h(
              'td',
              {},
              (w.current_jobs ?? []).length
                ? (w.current_jobs ?? []).flatMap((j, i) => [i ? ', ' : null, jobLink(j)])
                : 'idle',
            ),
            h('td', {}, `${fmtDuration(Date.now() / 1000 - w.last_heartbeat_at)} ago`),
          ),
      )
      note.textContent = list.data.length ? '' : 'No workers registered: start one with npm start (or the worker role).'
    },
    5000,
    (err) => {
      note.textContent = err.message
    },
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
    table(
      'queues-table',
      null,
      ['Queue', 'Waiting', 'Active', 'Delayed', 'Prioritized', 'Failed', 'Completed', 'Paused'],
      tbody,
    ),
  )
  return poll(async () => {
    const list = await api('/v1/admin/queues')
    syncRows(
      tbody,
      list.data,
      (q) => q.name,
      (q) =>
        h(
          'tr',
          { dataset: { queue: q.name } },
          h('td', {}, `${q.prefix}:${q.name}`),
          ['waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed'].map((k) =>
            h('td', { class: 'num' }, q.counts[k]),
          ),
          h('td', {}, q.paused ? 'yes' : 'no'),
        ),
    )
  }, POLL_MS)
}

// ---------- router ----------

const ROUTES = [
  [/^#\/jobs\/([^/?]+)/, (m) => jobPage(decodeURIComponent(m[1])), 'jobs'],
  [/^#\/compare/, () => comparePage(), 'jobs'],
  [/^#\/sweeps\/([^/?]+)/, (m) => sweepPage(decodeURIComponent(m[1])), 'sweeps'],
  [/^#\/sweeps/, () => sweepsPage(), 'sweeps'],
  [/^#\/new-job/, () => newJobPage(), 'jobs'],
  [/^#\/datasets\/([^/?]+)/, (m) => datasetPage(decodeURIComponent(m[1])), 'datasets'],
  [/^#\/datasets/, () => datasetsPage(), 'datasets'],
  [/^#\/models\/([^/?]+)/, (m) => modelPage(decodeURIComponent(m[1])), 'models'],
  [/^#\/models/, () => modelsPage(), 'models'],
  [/^#\/projects\/([^/?]+)/, (m) => projectPage(decodeURIComponent(m[1])), 'projects'],
  [/^#\/projects/, () => projectsPage(), 'projects'],
  [/^#\/workers/, () => workersPage(), 'workers'],
  [/^#\/queues/, () => queuesPage(), 'queues'],
  [/^#\/jobs/, () => jobsPage(), 'jobs'],
  [/^#?\/?$/, () => jobsPage(), 'jobs'],
]

async function route() {
  if (!csrf) return
  cleanup()
  cleanup = () => {}
  const hash = location.hash || '#/jobs'
  nav.classList.add('closed')
  menuToggle.setAttribute('aria-expanded', 'false')
  const found = ROUTES.find(([re]) => re.test(hash))
  for (const a of nav.querySelectorAll('a[data-page]'))
    if (found && a.dataset.page === found[2]) a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  if (!found) {
    show(
      h('h1', {}, 'Page not found'),
      h('p', {}, `Nothing lives at ${hash}. `, h('a', { href: '#/jobs' }, 'Go to the jobs.')),
    )
    return
  }
  show(h('p', { class: 'muted' }, 'Loading…'))
  try {
    const stop = await found[1](found[0].exec(hash))
    cleanup = stop ?? (() => {})
  } catch (err) {
    if (err?.status !== 401)
      show(
        h('h1', {}, err?.status === 404 ? 'Not found' : 'Something went wrong'),
        errorBox(err),
        h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
      )
  }
  main.focus({ preventScroll: true })
}

function start() {
  nav.hidden = false
  menuToggle.hidden = false
  route()
}

window.addEventListener('hashchange', route)

const session = await api('/admin/session', { quiet401: true }).catch(() => null)
if (session?.signed_in) {
  csrf = session.csrf_token
  start()
} else showSignIn()

// Prometheus metrics of an API process, served at GET /metrics (routes/metrics.ts). Each app has its own
// registry (tests build many apps in one process). What other processes measure is read at scrape time
// from Redis, so any API process answers for the whole deployment:
// - refit_http_request_duration_seconds  this process's HTTP latency, by method, route and status
// - refit_queue_jobs                       BullMQ jobs per queue and state
// - refit_job_duration_seconds             finished fine-tuning jobs, by method and status (job-metrics.ts)
// - refit_training_samples_per_second      per running job and worker, from the worker registry
// - refit_workers                          live registered workers, by resource class and backend
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { isAlive, listWorkers } from '../modules/workers/worker-registry.js'
import { QUEUE_KEYS } from '../queue/registry.js'
import { jobDurationText } from './job-metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: Registry; text(): Promise<string>; contentType: string }
  }
}

const QUEUE_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const

export const metricsPlugin = fp(
  async (app: FastifyInstance) => {
    const registry = new Registry()
    collectDefaultMetrics({ register: registry, prefix: 'refit_' })

    const http = new Histogram({
      name: 'refit_http_request_duration_seconds',
      help: 'HTTP request latency, by method, route (the route pattern, not the URL) and status.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    })
    app.addHook('onResponse', async (req, reply) => {
      // Unknown URLs share one label: a scanner must not create a series per path.
      const route = req.routeOptions.url ?? 'unmatched'
      http.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000)
    })

    // every queue of the registry
    const queues = () => QUEUE_KEYS.map((k) => app.queues[k])

    new Gauge({
      name: 'refit_queue_jobs',
      help: 'BullMQ jobs per queue and state.',
      labelNames: ['queue', 'state'] as const,
      registers: [registry],
      async collect() {
        this.reset()
        for (const q of queues()) {
          const counts = await q.getJobCounts(...QUEUE_STATES)
          for (const state of QUEUE_STATES) this.set({ queue: q.name, state }, counts[state] ?? 0)
        }
      },
    })

    const samples = new Gauge({
      name: 'refit_training_samples_per_second',
      help: 'Training throughput of each running job, per worker (latest progress report).',
      labelNames: ['worker', 'job', 'resource_class'] as const,
      registers: [registry],
    })
    const workers = new Gauge({
      name: 'refit_workers',
      help: 'Live registered worker processes, by resource class and backend.',
      labelNames: ['resource_class', 'backend'] as const,
      registers: [registry],
    })
    const readRegistry = async () => {
      samples.reset()
      workers.reset()
      const now = Date.now()
      for (const w of await listWorkers(app.redis, app.config.queuePrefix)) {
        if (!isAlive(w, now)) continue
        workers.inc({ resource_class: w.resource_class, backend: w.backend })
        for (const [job, sps] of Object.entries(w.job_throughput ?? {}))
          samples.set({ worker: w.id, job, resource_class: w.resource_class }, sps)
      }
    }

    app.decorate('metrics', {
      registry,
      contentType: registry.contentType,
      async text() {
        await readRegistry()
        const [own, jobs] = await Promise.all([registry.metrics(), jobDurationText(app.redis, app.config.queuePrefix)])
        return `${own}\n${jobs}`
      },
    })
  },
  { name: 'metrics', dependencies: ['redis', 'queues'] },
)

// The cross-project admin API the dashboard reads (admin token or dashboard session cookie).
import type { FastifyPluginAsync } from 'fastify'
import datasets from './datasets.js'
import jobs from './jobs.js'
import models from './models.js'
import projectActions from './project-actions.js'
import queues from './queues.js'
import sweeps from './sweeps.js'

const adminApi: FastifyPluginAsync = async (app) => {
  await app.register(jobs)
  await app.register(datasets)
  await app.register(models)
  await app.register(queues)
  await app.register(projectActions)
  await app.register(sweeps)
}

export default adminApi

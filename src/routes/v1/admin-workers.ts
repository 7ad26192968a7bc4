import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox'
import { listWorkers, presentWorker } from '../../modules/workers/worker-registry.js'
import { errorResponses, Nullable, StringEnum } from '../../schemas/common.js'

const Unix = Type.Integer({ description: 'Unix seconds' })

/** A registered worker process, as its last heartbeat described it. */
export const WorkerObject = Type.Object(
  {
    id: Type.String({ description: 'Registry id: `<hostname>-<pid>-<random>`.' }),
    object: Type.Literal('worker'),
    pid: Type.Integer(),
    hostname: Type.String(),
    role: Type.Literal('worker'),
    backend: Type.String({ description: 'TF.js backend its training processes run on: tensorflow, wasm or cpu.' }),
    device: StringEnum(['cpu', 'gpu']),
    resource_class: StringEnum(['cpu', 'gpu'], {
      description: 'WORKER_RESOURCE_CLASS: which training queue it consumes (`training` or `training-gpu`).',
    }),
    capabilities: Type.Record(Type.String(), Type.Boolean(), {
      description: 'What its backend can do, e.g. `depthwiseConvGradients`.',
    }),
    throughput_samples_per_second: Nullable(
      Type.Number({
        description: 'Training samples per second at its latest progress report; null before its first job.',
      }),
    ),
    current_jobs: Type.Array(Type.String(), { description: 'Ids of the fine-tuning jobs it trains now.' }),
    started_at: Unix,
    last_heartbeat_at: Unix,
    alive: Type.Boolean({
      description: 'Its last heartbeat is less than 3 heartbeats (WORKER_HEARTBEAT_MS) old; entries expire after that.',
    }),
  },
  { additionalProperties: false },
)

const WorkerList = Type.Object(
  { object: Type.Literal('list'), data: Type.Array(WorkerObject), has_more: Type.Boolean() },
  {
    examples: [
      {
        object: 'list',
        data: [
          {
            id: 'node-a-41873-9f2c1e',
            object: 'worker',
            pid: 41873,
            hostname: 'node-a',
            role: 'worker',
            backend: 'tensorflow',
            device: 'cpu',
            resource_class: 'cpu',
            capabilities: { depthwiseConvGradients: true },
            throughput_samples_per_second: 912.4,
            current_jobs: ['ftjob-6k2m0q8x1v3c5b7n9p0r2t4w'],
            started_at: 1767225600,
            last_heartbeat_at: 1767229200,
            alive: true,
          },
        ],
        has_more: false,
      },
    ],
  },
)

const routes: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/admin/workers',
    {
      config: { auth: 'admin' },
      schema: {
        tags: ['admin'],
        operationId: 'listWorkers',
        summary:
          'List the registered worker processes (oldest first): backend, resource class, running jobs, throughput',
        description:
          'Each worker process registers itself in Redis and refreshes its entry every WORKER_HEARTBEAT_MS; an entry expires after 3 missed heartbeats (a killed worker drops out on its own) and a graceful stop removes it at once.',
        response: { 200: WorkerList, ...errorResponses() },
      },
    },
    async () => {
      const now = Date.now()
      const data = (await listWorkers(app.redis, app.config.queuePrefix)).map((w) => presentWorker(w, now))
      return { object: 'list' as const, data, has_more: false }
    },
  )
}

export default routes

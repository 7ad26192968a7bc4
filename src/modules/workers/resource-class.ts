// Routing by resource class: a training job goes to the queue of the hardware it needs, and a worker
// consumes the queue of the hardware it has. `training` stays the cpu queue's name (older deployments keep
// working); gpu jobs go to `training-gpu`.
import { createRequire } from 'node:module'
import type { Redis } from 'ioredis'
import type { ResourceClass } from '../../config.js'
import { isAlive, listWorkers } from './worker-registry.js'

export const RESOURCE_CLASSES = ['cpu', 'gpu'] as const satisfies readonly ResourceClass[]

/** The BullMQ queue name of a resource class. */
export function trainingQueueName(resourceClass: ResourceClass): 'training' | 'training-gpu' {
  return resourceClass === 'gpu' ? 'training-gpu' : 'training'
}

/**
 * The resource class a job goes to: what it asked for (`resource_class` cpu or gpu), or for `auto` gpu
 * when a live gpu-class worker is registered (`live`: the classes of the live workers), else cpu. Decided
 * at each enqueue, so an auto job follows the workers that exist when it (re)enters a queue.
 */
export function jobResourceClass(
  job: { resourceClass?: 'auto' | 'cpu' | 'gpu' | null },
  live: ReadonlySet<string> = new Set(),
): ResourceClass {
  if (job.resourceClass === 'cpu' || job.resourceClass === 'gpu') return job.resourceClass
  return live.has('gpu') ? 'gpu' : 'cpu'
}

/** The resource classes of the workers alive now. */
export async function liveResourceClasses(redis: Redis, prefix: string): Promise<Set<string>> {
  return new Set((await listWorkers(redis, prefix)).filter((w) => isAlive(w)).map((w) => w.resource_class))
}

/**
 * `gpu` when the tensorflow backend is tfjs-node-gpu (the GPU image installs it under tfjs-node's name),
 * else `cpu`.
 */
export function detectDevice(backend: string): 'cpu' | 'gpu' {
  if (backend !== 'tensorflow') return 'cpu'
  try {
    const pkg = createRequire(import.meta.url)('@tensorflow/tfjs-node/package.json') as { name?: string }
    return pkg.name === '@tensorflow/tfjs-node-gpu' ? 'gpu' : 'cpu'
  } catch {
    return 'cpu'
  }
}

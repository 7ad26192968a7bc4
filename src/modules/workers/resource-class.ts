// Routing by resource class: a training job goes to the queue of the hardware it needs, and a worker
// consumes the queue of the hardware it has. `training` stays the cpu queue's name (older deployments keep
// working); gpu jobs go to `training-gpu`.
import { createRequire } from 'node:module'
import type { ResourceClass } from '../../config.js'

export const RESOURCE_CLASSES = ['cpu', 'gpu'] as const satisfies readonly ResourceClass[]

/** The BullMQ queue name of a resource class. */
export function trainingQueueName(resourceClass: ResourceClass): 'training' | 'training-gpu' {
  return resourceClass === 'gpu' ? 'training-gpu' : 'training'
}

/**
 * The resource class a job needs. Every job is cpu today (the cpu backends run every method); a job
 * option choosing gpu would be read here.
 */
export function jobResourceClass(_job: { id: string }): ResourceClass {
  return 'cpu'
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

// No Docker engine runs here, so the images are not built: these checks read the Dockerfiles and the
// compose file and hold them to what deployment needs.
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { parse } from 'yaml'
import { projectRoot } from '../../src/lib/paths.js'

const read = (p: string) => readFile(join(projectRoot, p), 'utf8')

/** Dockerfile instructions, continuation lines joined, comments dropped. */
function instructions(text: string) {
  const joined = text.replace(/\\\r?\n/g, ' ')
  return joined
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/)
      return { op: op.toUpperCase(), args: rest.join(' ') }
    })
}

/** The instructions of the final stage. */
function finalStage(ins: ReturnType<typeof instructions>) {
  const lastFrom = ins.map((i) => i.op).lastIndexOf('FROM')
  return ins.slice(lastFrom)
}

for (const file of ['Dockerfile', 'docker/Dockerfile.gpu']) {
  test(`${file}: multi-stage, non-root, with a HEALTHCHECK and an entrypoint that knows the roles`, async () => {
    const ins = instructions(await read(file))
    assert.ok(ins.filter((i) => i.op === 'FROM').length >= 2, 'multi-stage')
    const final = finalStage(ins)
    const users = final.filter((i) => i.op === 'USER')
    assert.ok(users.length, 'the runtime stage sets USER')
    assert.ok(!/^(root|0)(:|$)/.test(users.at(-1)!.args), `runs as a non-root user, got ${users.at(-1)!.args}`)
    const hc = final.find((i) => i.op === 'HEALTHCHECK')
    assert.ok(hc && !/^NONE/i.test(hc.args), 'HEALTHCHECK')
    assert.match(hc.args, /healthcheck\.mjs/)
    const entry = final.find((i) => i.op === 'ENTRYPOINT')
    assert.ok(entry, 'ENTRYPOINT')
    assert.match(entry.args, /docker\/entrypoint\.sh/)
    // build tools stay in the build stage
    assert.ok(!final.some((i) => i.op === 'RUN' && /npm (ci|install)\b/.test(i.args)), 'no npm install at runtime')
  })
}

test('the GPU image runs on CUDA with tfjs-node-gpu under tfjs-node’s name, as a gpu worker', async () => {
  const text = await read('docker/Dockerfile.gpu')
  assert.match(text, /nvidia\/cuda:[^\s]+cudnn/)
  assert.match(text, /@tensorflow\/tfjs-node@npm:@tensorflow\/tfjs-node-gpu@4\.22\.0/)
  assert.match(text, /WORKER_RESOURCE_CLASS=gpu/)
  assert.match(text, /CMD \["worker"\]/)
})

test('the entrypoint has the api, worker and all roles; the healthcheck covers api and worker', async () => {
  const sh = await read('docker/entrypoint.sh')
  assert.match(sh, /\bworker\)\s*exec node dist\/workers\/worker\.js/)
  assert.match(sh, /\bapi\)\s*REFIT_ROLE=api exec node dist\/src\/main\.js/)
  assert.match(sh, /\ball\)\s*REFIT_ROLE=all exec node dist\/src\/main\.js/)
  const hc = await read('docker/healthcheck.mjs')
  assert.match(hc, /\/healthz/)
  assert.match(hc, /registry:worker/)
})

test('docker-compose.yml: PostgreSQL, durable noeviction Redis, API, CPU workers, GPU profile, healthchecks, volumes', async () => {
  // compose applies YAML merge keys (`<<: *refit-env`)
  const doc = parse(await read('docker-compose.yml'), { merge: true }) as any
  const s = doc.services
  for (const name of ['postgres', 'redis', 'api', 'worker', 'worker-gpu']) assert.ok(s[name], `service ${name}`)
  for (const name of Object.keys(s)) assert.ok(s[name].healthcheck?.test, `${name} has a healthcheck`)

  const redisCmd = [s.redis.command].flat().join(' ')
  assert.match(redisCmd, /--appendonly yes/)
  assert.match(redisCmd, /--maxmemory-policy noeviction/)
  assert.ok(
    s.redis.volumes.some((v: string) => v.endsWith(':/data')),
    'Redis keeps its append-only file on a volume',
  )
  assert.ok(
    s.postgres.volumes.some((v: string) => v.includes('/var/lib/postgresql/data')),
    'PostgreSQL data on a volume',
  )

  assert.deepEqual([s.api.command].flat(), ['api'])
  assert.deepEqual([s.worker.command].flat(), ['worker'])
  assert.equal(s.worker.environment.WORKER_RESOURCE_CLASS, 'cpu')
  assert.ok(s.worker.deploy?.replicas, 'CPU workers have replicas')
  assert.equal(s.api.depends_on.postgres.condition, 'service_healthy')
  assert.equal(s.api.depends_on.redis.condition, 'service_healthy')
  // the API and the workers share storage
  const dataVolume = (svc: any) => svc.volumes.find((v: string) => v.endsWith(':/data'))
  assert.ok(dataVolume(s.api))
  assert.equal(dataVolume(s.worker), dataVolume(s.api))
  assert.equal(s.api.environment.REDIS_URL, 'redis://redis:6379')
  assert.equal(s.worker.environment.DATABASE_URL, s.api.environment.DATABASE_URL)

  const gpu = s['worker-gpu']
  assert.deepEqual(gpu.profiles, ['gpu'])
  assert.equal(gpu.build.dockerfile, 'docker/Dockerfile.gpu')
  assert.equal(gpu.environment.WORKER_RESOURCE_CLASS, 'gpu')
  assert.ok(
    gpu.deploy.resources.reservations.devices.some((d: any) => d.capabilities.includes('gpu')),
    'reserves a GPU',
  )
  for (const v of ['pgdata', 'redisdata', 'refit-data']) assert.ok(v in doc.volumes, `volume ${v}`)
})

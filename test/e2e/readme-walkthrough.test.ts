// Runs the README's curl walk-through exactly as written against a fresh service.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import { projectRoot } from '../../src/lib/paths.js'
import { ADMIN_TOKEN, createTestEnv, type TestEnv } from '../helpers/env.js'
import { type RunningService, startService } from '../helpers/service.js'

let env: TestEnv
let service: RunningService
let work: string

before(async () => {
  env = await createTestEnv('readme')
  service = await startService(env.env)
  work = await mkdtemp(join(tmpdir(), 'refit-readme-'))
})
after(async () => {
  await service?.stop()
  await env?.cleanup()
  if (work) await rm(work, { recursive: true, force: true })
})

test('the README walk-through runs as written and ends with a downloaded model', async () => {
  const readme = await readFile(join(projectRoot, 'README.md'), 'utf8')
  const blocks = [...readme.matchAll(/```bash walkthrough\n([\s\S]*?)```/g)].map((m) => m[1])
  assert.equal(blocks.length, 1, 'one walk-through block')
  const child = spawn('bash', ['-euo', 'pipefail', '-c', blocks[0]], {
    cwd: projectRoot,
    env: { ...process.env, REFIT: service.url, ADMIN_TOKEN, WORK: work },
  })
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
  })
  child.stderr.on('data', (d) => {
    out += d
  })
  const code = await new Promise((r) => child.on('exit', r))
  assert.equal(code, 0, `walk-through failed:\n${out}`)
  assert.match(out, /"status":"processed","format":"idx"/)
  assert.match(out, /"status":"succeeded","backend":"(tensorflow|wasm|cpu)"/)
  assert.match(out, /Job succeeded: ft:mnist-cnn:refit:/)
  assert.match(out, /metadata\.json\nmodel\.json\nweights\.bin/)
  assert.match(out, /"classes":\["5","6","7","8","9"\]/)
})

#!/usr/bin/env node
// Postinstall: gives @tensorflow/tfjs-node its native addon.
//
// tfjs-node's own install script is denied in package.json "allowScripts" because it downloads
// libtensorflow 2.9.1 from Google's storage, which our machines cannot reach. This script first
// lets tfjs-node's installer try (it works wherever the download is reachable), and otherwise builds
// the addon from source against the libtensorflow shipped inside the tensorflow-cpu Python wheel
// (see ../shared/STACK.md). The unpacked libtensorflow is cached outside the checkout
// (REFIT_ENGINE_CACHE, default ~/.cache/refit/libtensorflow) so a fresh clone reuses it.
// It never fails `npm ci`: without the addon the worker falls back to wasm or cpu and says so.
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const tfjsNode = join(root, 'node_modules/@tensorflow/tfjs-node')
const cache = resolve(process.env.REFIT_ENGINE_CACHE ?? join(homedir(), '.cache/refit/libtensorflow'))
const log = (msg) => console.log(`[install-engine] ${msg}`)

function addonWorks() {
  const r = spawnSync(
    process.execPath,
    ['-e', "const tf=require('@tensorflow/tfjs-node');process.stdout.write(tf.backend().binding.TF_Version)"],
    { cwd: root, encoding: 'utf8', timeout: 120_000 },
  )
  return r.status === 0 ? r.stdout.trim() : null
}

function run(cmd, args, opts = {}) {
  execFileSync(cmd, args, { stdio: 'inherit', ...opts })
}

function fetchWheelLibs() {
  if (existsSync(join(cache, 'tensorflow/libtensorflow_cc.so.2'))) return
  const wheelDir = join(cache, 'wheel')
  mkdirSync(wheelDir, { recursive: true })
  log(`downloading the tensorflow-cpu wheel with pip into ${wheelDir} (about 270 MB)`)
  const pip = spawnSync('pip', ['--version']).status === 0 ? 'pip' : 'pip3'
  run(pip, ['download', 'tensorflow-cpu', '--no-deps', '-q', '-d', wheelDir])
  const wheel = readdirSync(wheelDir).find((f) => f.startsWith('tensorflow_cpu-') && f.endsWith('.whl'))
  if (!wheel) throw new Error('pip did not produce a tensorflow_cpu wheel')
  run('unzip', [
    '-q',
    '-o',
    join(wheelDir, wheel),
    'tensorflow/libtensorflow_cc.so.2',
    'tensorflow/libtensorflow_framework.so.2',
    'tensorflow/include/tensorflow/c/*',
    'tensorflow/include/tensorflow/core/platform/*',
    'tensorflow/include/tsl/platform/*',
    'tensorflow/include/xla/tsl/*',
    '-d',
    cache,
  ])
  rmSync(wheelDir, { recursive: true, force: true })
}

function linkForce(target, path) {
  rmSync(path, { force: true }) // removes a stale symlink too
  symlinkSync(target, path)
}

function buildFromWheel() {
  fetchWheelLibs()
  const lib = join(cache, 'tensorflow')
  const depsLib = join(tfjsNode, 'deps/lib')
  mkdirSync(depsLib, { recursive: true })
  mkdirSync(join(tfjsNode, 'deps/include'), { recursive: true })
  for (const name of ['libtensorflow.so.2.9.1', 'libtensorflow.so', 'libtensorflow_cc.so.2'])
    linkForce(join(lib, 'libtensorflow_cc.so.2'), join(depsLib, name))
  for (const name of ['libtensorflow_framework.so.2', 'libtensorflow_framework.so'])
    linkForce(join(lib, 'libtensorflow_framework.so.2'), join(depsLib, name))
  cpSync(join(lib, 'include'), join(tfjsNode, 'deps/include'), { recursive: true })
  // With deps/lib present tfjs-node's installer skips the libtensorflow download, fails to fetch a
  // prebuilt addon and compiles the addon from source with node-gyp.
  log('compiling the tfjs-node addon against the wheel libtensorflow')
  run(process.execPath, ['scripts/install.js'], {
    cwd: tfjsNode,
    env: {
      ...process.env,
      PATH: `${join(root, 'node_modules/.bin')}:${process.env.PATH}`,
      npm_config_nodedir: process.env.npm_config_nodedir ?? '/usr',
    },
  })
}

function main() {
  if (!existsSync(tfjsNode)) return log('@tensorflow/tfjs-node is not installed: nothing to do')
  let version = addonWorks()
  if (version) return log(`tfjs-node addon present (TensorFlow ${version})`)
  if (!process.env.REFIT_SKIP_TFJS_DOWNLOAD) {
    log("trying tfjs-node's own installer (downloads libtensorflow)")
    const own = spawnSync(process.execPath, ['scripts/install.js'], {
      cwd: tfjsNode,
      stdio: 'inherit',
      timeout: 180_000,
    })
    version = own.status === 0 ? addonWorks() : null
    if (version) return log(`tfjs-node addon installed (TensorFlow ${version})`)
    rmSync(join(tfjsNode, 'deps'), { recursive: true, force: true })
  }
  try {
    buildFromWheel()
  } catch (err) {
    return log(`could not build the tensorflow backend (${err.message}); the worker will fall back to wasm or cpu`)
  }
  version = addonWorks()
  log(
    version
      ? `tfjs-node addon built (TensorFlow ${version})`
      : 'the built addon does not load; the worker will fall back to wasm or cpu',
  )
}

main()

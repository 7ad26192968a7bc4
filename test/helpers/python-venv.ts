// A cached Python virtualenv holding one version of a pip package, for tests that drive a Python client
// (~/.cache/refit/<name>-<version>; `python3 -m venv`, then `pip install --retries 0 --timeout 2 pkg==version`).
// When python3, venv or pip fails, tests skip with the reason; with CI=true they fail instead.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'

export interface Venv {
  python: string
}

function run(cmd: string, args: string[], timeoutMs: number) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs })
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` }
}

/** The venv's python, or a reason to skip (a failure on CI). */
export async function pythonVenv(pkg: string, version: string): Promise<Venv | { skip: string }> {
  const dir = join(process.env.REFIT_PY_CACHE ?? join(homedir(), '.cache', 'refit'), `${pkg}-py-${version}`)
  const python = join(dir, 'bin', 'python')
  const installed = () =>
    existsSync(python) &&
    run(python, ['-c', `import importlib.metadata as m; assert m.version("${pkg}") == "${version}"`], 30_000).ok
  if (installed()) return { python }
  const fail = async (what: string, out: string) => {
    await rm(dir, { recursive: true, force: true })
    const reason = `${what} failed, so the ${pkg}==${version} Python SDK tests are skipped: ${out.trim().split('\n').slice(-3).join(' | ')}`
    if (process.env.CI === 'true') throw new Error(reason)
    return { skip: reason }
  }
  const venv = run('python3', ['-m', 'venv', '--clear', dir], 120_000)
  if (!venv.ok) return fail('python3 -m venv', venv.out)
  const pip = run(
    join(dir, 'bin', 'pip'),
    ['install', '--disable-pip-version-check', '--retries', '0', '--timeout', '2', `${pkg}==${version}`],
    300_000,
  )
  if (!pip.ok || !installed()) return fail(`pip install ${pkg}==${version}`, pip.out)
  return { python }
}

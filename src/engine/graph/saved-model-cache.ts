// Compiled graphs on disk: `<cacheDir>/<content sha256>/` holds saved_model.pb, an empty variables/ and
// refit-graph.json, written atomically (a temp directory renamed into place, so a concurrent reader never
// sees half a graph). Any process (training jobs, the inference pool, evaluations) that compiles the same
// frozen part of the same weights finds it there. Least recently used entries beyond the byte budget are
// removed after each write.
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'

const PB = 'saved_model.pb'
const META = 'refit-graph.json'

/** What refit-graph.json records next to a compiled graph. */
export interface GraphEntryMeta {
  contentSha256: string
  /** sha256 of saved_model.pb: identifies the compiled graph itself */
  compiledSha256: string
  bytes: number
  inputShape: number[]
  outputShape: number[]
  compilerVersion: number
}

/** Returns the entry's directory and metadata when it is complete, touching it (most recently used). */
export async function findGraph(
  cacheDir: string,
  contentSha256: string,
): Promise<{ dir: string; meta: GraphEntryMeta } | null> {
  const dir = path.join(cacheDir, contentSha256)
  try {
    const meta = JSON.parse(await readFile(path.join(dir, META), 'utf8')) as GraphEntryMeta
    if (!existsSync(path.join(dir, PB))) return null
    const now = new Date()
    await utimes(path.join(dir, META), now, now).catch(() => {})
    return { dir, meta }
  } catch {
    return null
  }
}

/** Writes a SavedModel directory under `cacheDir` (or a private temp directory when null). */
export async function writeGraph(
  cacheDir: string | null,
  contentSha256: string,
  savedModel: Uint8Array,
  meta: GraphEntryMeta,
): Promise<string> {
  const root = cacheDir ?? path.join(tmpdir(), `refit-graphs-${process.pid}`)
  await mkdir(root, { recursive: true })
  const dir = path.join(root, contentSha256)
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`
  await mkdir(path.join(tmp, 'variables'), { recursive: true })
  await writeFile(path.join(tmp, PB), savedModel)
  await writeFile(path.join(tmp, META), `${JSON.stringify(meta, null, 2)}\n`)
  try {
    await rename(tmp, dir)
  } catch {
    // another process wrote the same graph first: same content, keep theirs
    await rm(tmp, { recursive: true, force: true })
  }
  return dir
}

/** Removes the least recently used entries until the cache holds at most `budgetBytes` (never `keep`). */
export async function pruneGraphs(cacheDir: string, budgetBytes: number, keep: string): Promise<void> {
  let names: string[]
  try {
    names = await readdir(cacheDir)
  } catch {
    return
  }
  const entries: { dir: string; bytes: number; used: number }[] = []
  for (const name of names) {
    const dir = path.join(cacheDir, name)
    if (name.includes('.tmp-')) {
      // a writer that died: remove after an hour
      const s = await stat(dir).catch(() => null)
      if (s && Date.now() - s.mtimeMs > 3_600_000) await rm(dir, { recursive: true, force: true })
      continue
    }
    const [pb, meta] = await Promise.all([
      stat(path.join(dir, PB)).catch(() => null),
      stat(path.join(dir, META)).catch(() => null),
    ])
    if (!pb || !meta) continue
    entries.push({ dir, bytes: pb.size, used: meta.mtimeMs })
  }
  let total = entries.reduce((a, e) => a + e.bytes, 0)
  entries.sort((a, b) => a.used - b.used)
  for (const e of entries) {
    if (total <= budgetBytes) break
    if (path.resolve(e.dir) === path.resolve(keep)) continue
    await rm(e.dir, { recursive: true, force: true })
    total -= e.bytes
  }
}

/** A private graph directory (no cache directory configured) is removed once its session is loaded. */
export async function removePrivateGraph(cacheDir: string | null, dir: string): Promise<void> {
  if (cacheDir === null) await rm(dir, { recursive: true, force: true })
}

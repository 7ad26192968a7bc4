import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import yauzl from 'yauzl'

/** Extracts a zip held in memory (test helper; refuses entries that leave `dir`). */
export async function unzipToDir(buf: Buffer, dir: string): Promise<string[]> {
  const entries = await unzipToMemory(buf)
  for (const [name, content] of entries) {
    if (name.includes('..') || name.startsWith('/')) throw new Error(`unsafe ${name}`)
    const out = join(dir, name)
    // a directory entry (a SavedModel's empty variables/)
    if (name.endsWith('/')) {
      await mkdir(out, { recursive: true })
      continue
    }
    await mkdir(dirname(out), { recursive: true })
    await writeFile(out, content)
  }
  return [...entries.keys()]
}

/** The entries of a zip held in memory, by name. */
export async function unzipToMemory(buf: Buffer): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>()
  const zip = await new Promise<yauzl.ZipFile>((res, rej) =>
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, z) => (err ? rej(err) : res(z!))),
  )
  await new Promise<void>((resolve, reject) => {
    zip.on('error', reject)
    zip.on('end', () => resolve())
    zip.on('entry', (entry: yauzl.Entry) => {
      zip.openReadStream(entry, async (err, stream) => {
        if (err) return reject(err)
        const chunks: Buffer[] = []
        for await (const c of stream!) chunks.push(c as Buffer)
        out.set(entry.fileName, Buffer.concat(chunks))
        zip.readEntry()
      })
    })
    zip.readEntry()
  })
  return out
}

import { mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import yauzl from 'yauzl'

/** Extracts a zip held in memory (test helper; refuses entries that leave `dir`). */
export async function unzipToDir(buf: Buffer, dir: string): Promise<string[]> {
  const zip = await new Promise<yauzl.ZipFile>((res, rej) =>
    yauzl.fromBuffer(buf, { lazyEntries: true }, (err, z) => (err ? rej(err) : res(z!))),
  )
  const names: string[] = []
  await new Promise<void>((resolve, reject) => {
    zip.on('error', reject)
    zip.on('end', () => resolve())
    zip.on('entry', (entry: yauzl.Entry) => {
      if (entry.fileName.includes('..') || entry.fileName.startsWith('/'))
        return reject(new Error(`unsafe ${entry.fileName}`))
      zip.openReadStream(entry, async (err, stream) => {
        if (err) return reject(err)
        const chunks: Buffer[] = []
        for await (const c of stream!) chunks.push(c as Buffer)
        const out = join(dir, entry.fileName)
        await mkdir(dirname(out), { recursive: true })
        await writeFile(out, Buffer.concat(chunks))
        names.push(entry.fileName)
        zip.readEntry()
      })
    })
    zip.readEntry()
  })
  return names
}

// Test helpers: temp files and a tiny zip writer. The writer is ours (not yazl) because tests need zips that
// good tools refuse to make: `../` names, absolute paths, symlink entries.
import assert from 'node:assert/strict'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { crc32 } from 'node:zlib'
import sharp from 'sharp'
import { DatasetValidationError } from '../../src/datasets/index.js'

/** A fresh temp directory removed when the test (or suite) ends. */
export async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'refit-datasets-'))
  t.after(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export interface ZipItem {
  name: string
  data?: Buffer | string
  /** unix mode, e.g. 0o120777 for a symlink */
  mode?: number
}

/** Builds a stored (uncompressed) zip byte for byte, names taken verbatim. */
export function buildZip(items: ZipItem[]): Buffer {
  const locals: Buffer[] = []
  const centrals: Buffer[] = []
  let offset = 0
  for (const item of items) {
    const name = Buffer.from(item.name, 'utf8')
    const data = typeof item.data === 'string' ? Buffer.from(item.data) : (item.data ?? Buffer.alloc(0))
    const crc = crc32(data)
    const local = Buffer.alloc(30)
    local.writeUInt32LE(0x04034b50, 0)
    local.writeUInt16LE(20, 4)
    local.writeUInt16LE(0x800, 6) // UTF-8 names
    local.writeUInt32LE(crc, 14)
    local.writeUInt32LE(data.length, 18)
    local.writeUInt32LE(data.length, 22)
    local.writeUInt16LE(name.length, 26)
    const central = Buffer.alloc(46)
    central.writeUInt32LE(0x02014b50, 0)
    central.writeUInt16LE((3 << 8) | 20, 4) // made by unix
    central.writeUInt16LE(20, 6)
    central.writeUInt16LE(0x800, 8)
    central.writeUInt32LE(crc, 16)
    central.writeUInt32LE(data.length, 20)
    central.writeUInt32LE(data.length, 24)
    central.writeUInt16LE(name.length, 28)
    const mode = item.mode ?? (item.name.endsWith('/') ? 0o40755 : 0o100644)
    central.writeUInt32LE((mode << 16) >>> 0, 38)
    central.writeUInt32LE(offset, 42)
    locals.push(local, name, data)
    centrals.push(central, name)
    offset += local.length + name.length + data.length
  }
  const cd = Buffer.concat(centrals)
  const end = Buffer.alloc(22)
  end.writeUInt32LE(0x06054b50, 0)
  end.writeUInt16LE(items.length, 8)
  end.writeUInt16LE(items.length, 10)
  end.writeUInt32LE(cd.length, 12)
  end.writeUInt32LE(offset, 16)
  return Buffer.concat([...locals, cd, end])
}

export async function writeZip(path: string, items: ZipItem[]): Promise<string> {
  await writeFile(path, buildZip(items))
  return path
}

/** A solid PNG: `value` is one gray level or [r, g, b]. */
export async function png(width: number, height: number, value: number | [number, number, number]): Promise<Buffer> {
  const channels = typeof value === 'number' ? 1 : 3
  const px = Buffer.alloc(width * height * channels)
  for (let i = 0; i < px.length; i++) px[i] = typeof value === 'number' ? value : value[i % 3]!
  const img = sharp(px, { raw: { width, height, channels } })
  return (channels === 1 ? img.toColourspace('b-w') : img).png().toBuffer()
}

/** An IDX file: magic then big-endian dims then bytes. */
export function idxFile(magic: number, dims: number[], data: number[] | Buffer): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length)
  head.writeUInt32BE(magic, 0)
  for (const [i, d] of dims.entries()) head.writeUInt32BE(d, 4 + 4 * i)
  return Buffer.concat([head, Buffer.from(data)])
}

/** Awaits a rejection and returns it as a DatasetValidationError with the expected code. */
export async function rejectsWith(promise: Promise<unknown>, code: string): Promise<DatasetValidationError> {
  try {
    await promise
  } catch (e) {
    assert.ok(e instanceof DatasetValidationError, `expected DatasetValidationError, got ${String(e)}`)
    assert.equal(e.code, code, `code; message: ${e.message}`)
    return e
  }
  assert.fail(`expected a rejection with code ${code}`)
}

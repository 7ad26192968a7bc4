import yauzl from 'yauzl'
import { DatasetValidationError, type ProblemCollector } from './errors.js'
import type { DatasetLimits } from './limits.js'

/** A regular file inside a zip that passed the safety checks. */
export interface ZipFileEntry {
  /** path inside the archive, `/`-separated */
  name: string
  entry: yauzl.Entry
}

export interface SafeZip {
  zip: yauzl.ZipFile
  /** regular files in archive order, without directories, `__MACOSX/` and dotfiles */
  files: ZipFileEntry[]
}

/** Small entries may compress very well (a blank image, a short CSV); only big ones can be bombs. */
const RATIO_CHECK_FROM_BYTES = 1024 ** 2

const S_IFMT = 0o170000
const S_IFLNK = 0o120000

/** macOS Finder adds `__MACOSX/` resource forks and `.DS_Store`; editors leave dotfiles. None are data. */
export function isIgnoredPath(name: string): boolean {
  if (name.startsWith('__MACOSX/')) return true
  return name.split('/').some((part) => part.startsWith('.'))
}

/** The next entry of a `lazyEntries` zip, or undefined at the end. */
export function nextEntry(zip: yauzl.ZipFile): Promise<yauzl.Entry | undefined> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      zip.off('entry', onEntry)
      zip.off('end', onEnd)
      zip.off('error', onError)
    }
    const onEntry = (e: yauzl.Entry) => {
      cleanup()
      resolve(e)
    }
    const onEnd = () => {
      cleanup()
      resolve(undefined)
    }
    const onError = (err: Error) => {
      cleanup()
      reject(err)
    }
    zip.on('entry', onEntry)
    zip.on('end', onEnd)
    zip.on('error', onError)
    zip.readEntry()
  })
}

/**
 * Opens a zip and lists its regular files, refusing what could escape an extraction directory or exhaust
 * the server: absolute or `..` paths, backslashes, symlinks, encrypted entries, too many entries, too many
 * uncompressed bytes. Names are decoded here (not by yauzl) so an unsafe name becomes a problem naming the
 * entry rather than a bare error. The caller must `zip.close()`.
 */
export async function openSafeZip(path: string, limits: DatasetLimits, problems: ProblemCollector): Promise<SafeZip> {
  let zip: yauzl.ZipFile
  try {
    zip = await yauzl.openPromise(path, {
      lazyEntries: true,
      autoClose: false,
      decodeStrings: false,
      validateEntrySizes: true,
    })
  } catch (e) {
    return problems.fail({ message: `the file is not a readable zip archive (${(e as Error).message})` })
  }
  try {
    if (zip.entryCount > limits.maxZipEntries) {
      throw new DatasetValidationError(
        'dataset_too_large',
        `The zip holds ${zip.entryCount} entries; the limit is ${limits.maxZipEntries}.`,
      )
    }
    const files: ZipFileEntry[] = []
    let total = 0
    for (;;) {
      let entry: yauzl.Entry | undefined
      try {
        entry = await nextEntry(zip)
      } catch (e) {
        return problems.fail({ message: `the zip archive is damaged (${(e as Error).message})` })
      }
      if (!entry) break
      // strictFileNames: keep backslashes so validateFileName refuses them (Windows-style traversal).
      const name = yauzl.getFileNameLowLevel(entry.generalPurposeBitFlag, entry.fileNameRaw, entry.extraFields, true)
      const unsafe = yauzl.validateFileName(name) ?? (name.includes('\0') ? 'NUL byte in name' : null)
      if (unsafe) {
        problems.add({ entry: name, message: `unsafe entry name (${unsafe.split(':')[0]}); use relative paths only` })
        continue
      }
      const mode = (entry.externalFileAttributes >>> 16) & S_IFMT
      if (mode === S_IFLNK) {
        problems.add({ entry: name, message: 'symbolic links are not allowed; store the file itself' })
        continue
      }
      if (name.endsWith('/') || isIgnoredPath(name)) continue
      if (entry.isEncrypted()) {
        problems.add({ entry: name, message: 'encrypted entries are not supported' })
        continue
      }
      total += entry.uncompressedSize
      if (total > limits.maxUncompressedBytes) {
        throw new DatasetValidationError(
          'dataset_too_large',
          `The zip uncompresses to more than ${limits.maxUncompressedBytes} bytes, the limit.`,
          [{ entry: name, message: 'uncompressed size limit exceeded here' }],
        )
      }
      const ratio = entry.uncompressedSize / Math.max(1, entry.compressedSize)
      if (entry.uncompressedSize >= RATIO_CHECK_FROM_BYTES && ratio > limits.maxCompressionRatio) {
        throw new DatasetValidationError(
          'dataset_too_large',
          `A zip entry compresses ${Math.round(ratio)}:1, more than the ${limits.maxCompressionRatio}:1 allowed; this looks like a zip bomb.`,
          [{ entry: name, message: `compression ratio ${Math.round(ratio)}:1 over the limit` }],
        )
      }
      files.push({ name, entry })
    }
    return { zip, files }
  } catch (e) {
    zip.close()
    throw e
  }
}

/**
 * Reads an entry, or only its first `maxBytes` when given. yauzl stops inflating at the declared size
 * (validateEntrySizes), so a lying header fails here instead of growing the buffer without bound.
 */
export async function readZipEntry(zip: yauzl.ZipFile, entry: yauzl.Entry, maxBytes?: number): Promise<Buffer> {
  const stream = await zip.openReadStreamPromise(entry)
  const chunks: Buffer[] = []
  let size = 0
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk)
      size += chunk.length
      if (maxBytes !== undefined && size >= maxBytes) break
    }
  } finally {
    stream.destroy()
  }
  const buf = Buffer.concat(chunks)
  return maxBytes !== undefined ? buf.subarray(0, maxBytes) : buf
}

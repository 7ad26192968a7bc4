import { open } from 'node:fs/promises'
import yauzl from 'yauzl'
import { DatasetValidationError } from './errors.js'
import { IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC } from './idx-reader.js'
import type { DatasetFormat } from './types.js'
import { isIgnoredPath, nextEntry, readZipEntry } from './zip.js'

const SAMPLE_BYTES = 64 * 1024
/** An IDX zip holds two files; looking at a few more tolerates stray extras without scanning a big image zip. */
const ZIP_PEEK_FILES = 8

function unrecognized(message: string): DatasetValidationError {
  return new DatasetValidationError('unrecognized_format', message)
}

/** True when the zip's first few regular files include an IDX image or label file (by magic number). */
async function zipHoldsIdx(path: string): Promise<boolean> {
  let zip: yauzl.ZipFile
  try {
    zip = await yauzl.openPromise(path, { lazyEntries: true, autoClose: false, decodeStrings: false })
  } catch (e) {
    throw unrecognized(`The file starts like a zip archive but cannot be read as one (${(e as Error).message}).`)
  }
  try {
    let peeked = 0
    for (;;) {
      const entry = await nextEntry(zip)
      if (!entry || peeked >= ZIP_PEEK_FILES) return false
      // Names are only used to skip directories and Finder litter here; safety checks come with validation.
      const name = entry.fileNameRaw.toString('latin1')
      if (name.endsWith('/') || isIgnoredPath(name) || entry.isEncrypted()) continue
      peeked++
      const head = await readZipEntry(zip, entry, 4).catch(() => Buffer.alloc(0))
      if (head.length === 4) {
        const magic = head.readUInt32BE(0)
        if (magic === IDX_IMAGES_MAGIC || magic === IDX_LABELS_MAGIC) return true
      }
    }
  } catch (e) {
    if (e instanceof DatasetValidationError) throw e
    throw unrecognized(`The file starts like a zip archive but is damaged (${(e as Error).message}).`)
  } finally {
    zip.close()
  }
}

/**
 * Infers a dataset's format from its content: a zip is `idx` when it holds IDX files, else `image_zip`;
 * UTF-8 text starting with `{` is `jsonl`, other text `csv`. Throws `unrecognized_format` for binary data
 * and `empty_dataset` for an empty file.
 */
export async function detectFormat(path: string): Promise<DatasetFormat> {
  const fh = await open(path, 'r')
  let sample: Buffer
  try {
    const buf = Buffer.alloc(SAMPLE_BYTES)
    const { bytesRead } = await fh.read(buf, 0, SAMPLE_BYTES, 0)
    sample = buf.subarray(0, bytesRead)
  } finally {
    await fh.close()
  }
  if (sample.length === 0) throw new DatasetValidationError('empty_dataset', 'The file is empty.')
  // PK\x03\x04 starts a zip with entries, PK\x05\x06 an empty one.
  if (sample[0] === 0x50 && sample[1] === 0x4b && (sample[2] === 3 || sample[2] === 5)) {
    return (await zipHoldsIdx(path)) ? 'idx' : 'image_zip'
  }
  let text: string
  try {
    // stream: true so a multi-byte character cut at the end of the sample is not taken for bad UTF-8.
    text = new TextDecoder('utf-8', { fatal: true }).decode(sample, { stream: sample.length === SAMPLE_BYTES })
  } catch {
    throw unrecognized(
      'The file is neither a zip archive nor UTF-8 text; upload CSV, JSONL, a zip of images or an IDX zip.',
    )
  }
  if (text.includes('\0')) {
    throw unrecognized('The file contains binary data; upload CSV, JSONL, a zip of images or an IDX zip.')
  }
  const start = text.replace(/^\uFEFF/, '').trimStart()
  if (start === '') throw new DatasetValidationError('empty_dataset', 'The file contains only blank lines.')
  return start.startsWith('{') ? 'jsonl' : 'csv'
}

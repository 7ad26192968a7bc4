import { createReadStream } from 'node:fs'
import type { ProblemCollector } from './errors.js'

/** One line of a text file: its 1-based number and text without the line ending. */
export interface TextLine {
  line: number
  text: string
}

const NEWLINE = 0x0a

/**
 * Streams a text file line by line with bounded memory: a line longer than `maxLineBytes` stops the read
 * (readline would buffer it whole). Lines are split on the byte 0x0A, which never occurs inside a multi-byte
 * UTF-8 sequence, so each line is decoded on its own and a bad byte is reported with its line number.
 * Lines that are not UTF-8 or hold NUL bytes are reported to `problems` and skipped.
 */
export async function* readLines(
  path: string,
  maxLineBytes: number,
  problems: ProblemCollector,
): AsyncGenerator<TextLine> {
  const decoder = new TextDecoder('utf-8', { fatal: true })
  let pending: Buffer[] = []
  let pendingBytes = 0
  let line = 0

  const finishLine = (bytes: Buffer): TextLine | undefined => {
    line++
    let end = bytes.length
    if (end > 0 && bytes[end - 1] === 0x0d) end--
    let start = 0
    // A UTF-8 byte order mark is common in files saved by spreadsheet programs.
    if (line === 1 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3
    const slice = bytes.subarray(start, Math.max(start, end))
    if (slice.includes(0)) {
      problems.add({ line, message: 'the line contains a NUL byte; this looks like a binary file, not text' })
      return undefined
    }
    try {
      return { line, text: decoder.decode(slice) }
    } catch {
      problems.add({ line, message: 'the line is not valid UTF-8 text; save the file as UTF-8' })
      return undefined
    }
  }

  const tooLong = (): never =>
    problems.fail({ line: line + 1, message: `the line is longer than ${maxLineBytes} bytes` })

  const stream = createReadStream(path, { highWaterMark: 64 * 1024 })
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0
      for (;;) {
        const nl = chunk.indexOf(NEWLINE, start)
        if (nl === -1) break
        const piece = chunk.subarray(start, nl)
        if (pendingBytes + piece.length > maxLineBytes + 1) tooLong()
        const bytes = pendingBytes > 0 ? Buffer.concat([...pending, piece]) : piece
        pending = []
        pendingBytes = 0
        start = nl + 1
        const out = finishLine(bytes)
        if (out) yield out
        if (problems.full) return
      }
      if (start < chunk.length) {
        const rest = chunk.subarray(start)
        pendingBytes += rest.length
        if (pendingBytes > maxLineBytes + 1) tooLong()
        // Copy: the stream may reuse its chunk's memory.
        pending.push(Buffer.from(rest))
      }
    }
    if (pendingBytes > 0) {
      const out = finishLine(Buffer.concat(pending))
      if (out) yield out
    }
  } finally {
    stream.destroy()
  }
}

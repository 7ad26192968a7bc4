/**
 * A long text cut to at most `max` characters, keeping its head and its tail (where an error message puts
 * the cause and the call), with how much was left out in between.
 */
export function clipMiddle(text: string, max: number): string {
  if (text.length <= max) return text
  const tail = Math.floor(max / 5)
  const note = ` … [${text.length} characters, middle left out] … `
  const head = Math.max(0, max - tail - note.length)
  return `${text.slice(0, head)}${note}${text.slice(text.length - tail)}`
}

import assert from 'node:assert/strict'
import { test } from 'node:test'
import { clipMiddle } from '../../src/lib/clip.js'

test('a long message keeps its head and tail within the limit and says how long it was', () => {
  const text = `START ${'x'.repeat(100_000)} END`
  const clipped = clipMiddle(text, 2000)
  assert.ok(clipped.length <= 2000, `${clipped.length} characters`)
  assert.ok(clipped.startsWith('START '))
  assert.ok(clipped.endsWith(' END'))
  assert.match(clipped, new RegExp(`\\[${text.length} characters, middle left out\\]`))
})

test('a message within the limit is unchanged', () => {
  assert.equal(clipMiddle('short', 2000), 'short')
  const exact = 'y'.repeat(2000)
  assert.equal(clipMiddle(exact, 2000), exact)
})

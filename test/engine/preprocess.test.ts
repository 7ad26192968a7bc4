import assert from 'node:assert/strict'
import { test } from 'node:test'
import { EngineError } from '../../src/engine/errors.js'
import { checkCompatible, fitStandardization, preprocessRows, rowRange } from '../../src/engine/preprocess.js'
import type { Preprocessing } from '../../src/engine/protocol.js'

const prep: Preprocessing = { scale: 0.5, offset: -1, resize: true, channels: 'as_model' }

test('images: scale/offset, gray to RGB, RGB to gray, RGBA to RGB', () => {
  const gray = { kind: 'image' as const, x: Uint8Array.from([0, 2, 4, 6]), sampleShape: [2, 2, 1] }
  assert.deepEqual(Array.from(preprocessRows(gray, [0], prep, [2, 2, 1])), [-1, 0, 1, 2])
  assert.deepEqual(Array.from(preprocessRows(gray, [0], prep, [2, 2, 3])).slice(0, 6), [-1, -1, -1, 0, 0, 0])
  const rgb = { kind: 'image' as const, x: Uint8Array.from([0, 2, 4, 6, 6, 6]), sampleShape: [1, 2, 3] }
  assert.deepEqual(Array.from(preprocessRows(rgb, [0], prep, [1, 2, 1])), [0, 2])
  const rgba = { kind: 'image' as const, x: Uint8Array.from([2, 4, 6, 255]), sampleShape: [1, 1, 4] }
  assert.deepEqual(Array.from(preprocessRows(rgba, [0], prep, [1, 1, 3])), [0, 1, 2])
})

test('rows are taken in the order given', () => {
  const ds = { kind: 'image' as const, x: Uint8Array.from([10, 20, 30]), sampleShape: [1, 1, 1] }
  assert.deepEqual(Array.from(preprocessRows(ds, [2, 0], { ...prep, scale: 1, offset: 0 }, [1, 1, 1])), [30, 10])
})

test('tabular: standardization then scale/offset', () => {
  const ds = { kind: 'tabular' as const, x: Float32Array.from([1, 10, 3, 10]), sampleShape: [2] }
  const st = fitStandardization(ds)
  assert.deepEqual(st, { mean: [2, 10], std: [1, 1] })
  const out = preprocessRows(
    ds,
    rowRange(0, 2),
    { scale: 1, offset: 0, resize: false, channels: 'as_model', standardize: st },
    [2],
  )
  assert.deepEqual(Array.from(out), [-1, 0, 1, 0])
})

test('incompatible shapes are permanent errors', () => {
  const img = { kind: 'image' as const, x: new Uint8Array(16), sampleShape: [4, 4, 1] }
  assert.throws(
    () => checkCompatible(img, [28, 28, 1]),
    (e: EngineError) => e.code === 'dataset_incompatible' && e.permanent,
  )
  assert.throws(() => checkCompatible(img, [16]), EngineError)
  const tab = { kind: 'tabular' as const, x: new Float32Array(4), sampleShape: [2] }
  assert.throws(() => checkCompatible(tab, [28, 28, 1]), EngineError)
  checkCompatible(tab, [2])
  checkCompatible({ ...img, sampleShape: [4, 4, 3] }, [4, 4, 1])
})

// Classification metrics from probabilities: the confusion matrix and the misclassified samples it keeps.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { evaluateProbabilities, MAX_MISCLASSIFIED } from '../../src/engine/evaluate.js'

test('misclassified samples: most confident first, with their dataset index, true and predicted class', () => {
  const classes = ['a', 'b']
  // rows: (true a, p(a) .9), (true a, p(b) .6), (true b, p(a) .8), (true b, p(b) .7)
  const probs = Float32Array.from([0.9, 0.1, 0.4, 0.6, 0.8, 0.2, 0.3, 0.7])
  const ev = evaluateProbabilities(probs, [0, 0, 1, 1], classes, [10, 11, 12, 13])
  assert.deepEqual(ev.confusion_matrix, [
    [1, 1],
    [1, 1],
  ])
  assert.deepEqual(ev.misclassified, [
    { index: 12, true: 'b', predicted: 'a', probability: 0.8 },
    { index: 11, true: 'a', predicted: 'b', probability: 0.6 },
  ])
})

test(`at most ${MAX_MISCLASSIFIED} misclassified samples are kept`, () => {
  const n = 120
  const probs = new Float32Array(n * 2)
  for (let i = 0; i < n; i++) probs.set([0.1, 0.9], i * 2) // every row predicted b
  const ev = evaluateProbabilities(probs, new Array(n).fill(0), ['a', 'b'])
  assert.equal(ev.misclassified!.length, MAX_MISCLASSIFIED)
  assert.deepEqual(
    ev.misclassified!.slice(0, 3).map((m) => m.index),
    [0, 1, 2],
  )
  assert.equal(ev.confusion_matrix[0]![1], n)
})

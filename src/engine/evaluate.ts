// Classification metrics computed from predicted probabilities on the JS side (no tensors kept).
import type { Evaluation } from './protocol.js'

const EPS = 1e-7

/** Mean categorical cross-entropy and accuracy of `probs` ([n, k] row-major) against class indices `labels`. */
export function lossAndAccuracy(
  probs: Float32Array,
  labels: ArrayLike<number>,
  k: number,
): { loss: number; accuracy: number } {
  const n = labels.length
  if (n === 0) return { loss: Number.NaN, accuracy: Number.NaN }
  let loss = 0
  let correct = 0
  for (let i = 0; i < n; i++) {
    const row = i * k
    const p = probs[row + labels[i]]
    loss -= Math.log(Math.min(1 - EPS, Math.max(EPS, p)))
    if (argmax(probs, row, k) === labels[i]) correct++
  }
  return { loss: loss / n, accuracy: correct / n }
}

function argmax(a: Float32Array, start: number, k: number): number {
  let best = 0
  for (let j = 1; j < k; j++) if (a[start + j] > a[start + best]) best = j
  return best
}

/** How many misclassified samples an evaluation keeps: the most confidently wrong ones. */
export const MAX_MISCLASSIFIED = 50

/**
 * Loss, accuracy, per-class precision/recall/support, confusion matrix (rows: true class) and up to
 * MAX_MISCLASSIFIED misclassified samples, most confident first. `rowIndex[i]` is sample i's index in its
 * dataset (default i), so a page can show the sample through the dataset's samples route.
 */
export function evaluateProbabilities(
  probs: Float32Array,
  labels: ArrayLike<number>,
  classes: string[],
  rowIndex?: ArrayLike<number>,
): Evaluation {
  const k = classes.length
  const confusion = classes.map(() => new Array<number>(k).fill(0))
  const wrong: { i: number; predicted: number; probability: number }[] = []
  for (let i = 0; i < labels.length; i++) {
    const predicted = argmax(probs, i * k, k)
    confusion[labels[i]][predicted]++
    if (predicted !== labels[i]) wrong.push({ i, predicted, probability: probs[i * k + predicted] })
  }
  wrong.sort((a, b) => b.probability - a.probability || a.i - b.i)
  const misclassified = wrong.slice(0, MAX_MISCLASSIFIED).map((w) => ({
    index: rowIndex ? rowIndex[w.i] : w.i,
    true: classes[labels[w.i]],
    predicted: classes[w.predicted],
    probability: Math.round(w.probability * 10000) / 10000,
  }))
  const { loss, accuracy } = lossAndAccuracy(probs, labels, k)
  const per_class = classes.map((name, c) => {
    const support = confusion[c].reduce((a, b) => a + b, 0)
    const predicted = confusion.reduce((a, row) => a + row[c], 0)
    const tp = confusion[c][c]
    return { class: name, precision: predicted ? tp / predicted : 0, recall: support ? tp / support : 0, support }
  })
  return {
    loss,
    accuracy,
    samples: labels.length,
    classes: [...classes],
    per_class,
    confusion_matrix: confusion,
    misclassified,
  }
}

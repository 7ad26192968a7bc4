import { defineMethodMatrix } from './method-matrix.js'

// cpu is ~100x slower than tensorflow: a few dozen samples
defineMethodMatrix('cpu', { samples: 80, epochs: 2 })

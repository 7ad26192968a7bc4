import { defineMethodMatrix } from './method-matrix.js'

defineMethodMatrix('tensorflow', { samples: 600, epochs: 3 })

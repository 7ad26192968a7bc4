import { defineMethodMatrix } from './method-matrix.js'

defineMethodMatrix('wasm', { samples: 300, epochs: 2 })

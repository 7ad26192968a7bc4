// Prints the TF.js backend the worker would train on (after its self-test); with an argument, exits 1
// unless it is that backend. Used by .ci/run to fail when tfjs-node's addon did not build.
import { selectBackend } from '../src/engine/backend.js'

const required = process.argv[2]
const selected = await selectBackend('auto')
for (const r of selected.rejected) console.log(`rejected ${r.backend}: ${r.reason}`)
console.log(`backend ${selected.backend}, self-test ${JSON.stringify(selected.selfTest)}`)
if (required && selected.backend !== required) {
  console.error(`expected the ${required} backend, got ${selected.backend}`)
  process.exit(1)
}
process.exit(0)

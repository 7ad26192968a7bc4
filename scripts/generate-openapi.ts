// npm run openapi: regenerates openapi/openapi.json from the app, and the typed client's
// openapi/schema.d.ts from that document. Commit both; test/openapi.test.ts fails when either drifts.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { projectRoot } from '../src/lib/paths.js'
import { generateOpenApiDocument, generateSchemaTypes } from '../src/openapi.js'

const doc = await generateOpenApiDocument()
const out = join(projectRoot, 'openapi', 'openapi.json')
await writeFile(out, `${JSON.stringify(doc, null, 2)}\n`)
console.log(`wrote ${out} (${Object.keys(doc.paths as object).length} paths)`)

const types = join(projectRoot, 'openapi', 'schema.d.ts')
await writeFile(types, await generateSchemaTypes(doc))
console.log(`wrote ${types}`)

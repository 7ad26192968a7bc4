// npm run openapi: regenerates openapi/openapi.json from the app. Commit the result.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { projectRoot } from '../src/lib/paths.js'
import { generateOpenApiDocument } from '../src/openapi.js'

const doc = await generateOpenApiDocument()
const out = join(projectRoot, 'openapi', 'openapi.json')
await writeFile(out, `${JSON.stringify(doc, null, 2)}\n`)
console.log(`wrote ${out} (${Object.keys(doc.paths as object).length} paths)`)

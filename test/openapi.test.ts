import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { test } from 'node:test'
import { ERROR_CATALOGUE } from '../src/errors.js'
import { projectRoot } from '../src/lib/paths.js'
import { generateOpenApiDocument } from '../src/openapi.js'

test('openapi/openapi.json is the document the app generates (run `npm run openapi` after changing routes)', async () => {
  const committed = JSON.parse(await readFile(join(projectRoot, 'openapi/openapi.json'), 'utf8'))
  const generated = await generateOpenApiDocument()
  assert.deepEqual(generated, committed)
})

test('every operation has an operationId, tags, a summary and the error envelope; codes are listed', async () => {
  const doc = (await generateOpenApiDocument()) as any
  assert.equal(doc.openapi, '3.1.0')
  const ids = new Set<string>()
  for (const [path, ops] of Object.entries<any>(doc.paths)) {
    for (const [method, op] of Object.entries<any>(ops)) {
      assert.ok(op.operationId, `${method} ${path} has an operationId`)
      assert.ok(!ids.has(op.operationId), `operationId ${op.operationId} is unique`)
      ids.add(op.operationId)
      assert.ok(op.tags?.length, `${method} ${path} has tags`)
      assert.ok(op.summary, `${method} ${path} has a summary`)
      if (path.startsWith('/v1/')) assert.ok(op.responses['401'], `${method} ${path} documents 401`)
    }
  }
  const codes = doc.components.schemas.Error.properties.error.properties.code
  const listed = JSON.stringify(codes)
  for (const code of Object.keys(ERROR_CATALOGUE))
    assert.ok(listed.includes(`"${code}"`), `${code} is in the Error schema`)
})

import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { before, test } from 'node:test'
import { Validator } from '@seriousme/openapi-schema-validator'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { ERROR_CATALOGUE } from '../src/errors.js'
import { projectRoot } from '../src/lib/paths.js'
import { generateOpenApiDocument, generateSchemaTypes } from '../src/openapi.js'

let doc: any

before(async () => {
  doc = await generateOpenApiDocument()
})

test('openapi/openapi.json is the document the app generates (run `npm run openapi` after changing routes)', async () => {
  const committed = JSON.parse(await readFile(join(projectRoot, 'openapi/openapi.json'), 'utf8'))
  assert.deepEqual(doc, committed)
})

test('openapi/schema.d.ts is the client types openapi-typescript renders from the document (`npm run openapi`)', async () => {
  const committed = await readFile(join(projectRoot, 'openapi/schema.d.ts'), 'utf8')
  assert.equal(await generateSchemaTypes(doc), committed)
})

test('the document is valid OpenAPI 3.1 (official schema, offline validator)', async () => {
  assert.equal(doc.openapi, '3.1.0')
  const result = await new Validator().validate(structuredClone(doc))
  assert.ok(result.valid, `invalid OpenAPI: ${JSON.stringify(result.errors, null, 2)?.slice(0, 4000)}`)
})

test('every operation has an operationId, tags, a summary and the error envelope; codes are listed', async () => {
  const ids = new Set<string>()
  for (const [path, method, op] of operations()) {
    assert.ok(op.operationId, `${method} ${path} has an operationId`)
    assert.ok(!ids.has(op.operationId), `operationId ${op.operationId} is unique`)
    ids.add(op.operationId)
    assert.ok(op.tags?.length, `${method} ${path} has tags`)
    assert.ok(op.summary, `${method} ${path} has a summary`)
    if (path.startsWith('/v1/')) {
      for (const status of ['401', '403', '500', '503'])
        assert.equal(
          op.responses[status]?.content?.['application/json']?.schema?.$ref,
          '#/components/schemas/Error',
          `${method} ${path} documents ${status} with the error envelope`,
        )
    }
  }
  const codes = doc.components.schemas.Error.properties.error.properties.code
  const listed = JSON.stringify(codes)
  for (const code of Object.keys(ERROR_CATALOGUE))
    assert.ok(listed.includes(`"${code}"`), `${code} is in the Error schema`)
})

test('every request body and success response carries an example, and every example matches its schema', async () => {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false })
  // Components are registered under their document address, so `$ref`s resolve as they are written.
  ajv.addSchema({ $id: 'doc', components: doc.components }, 'doc')
  const rebase = (schema: unknown) =>
    JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"doc#/components/'))
  const missing: string[] = []
  const wrong: string[] = []
  for (const [, , op] of operations()) {
    const media: [string, any][] = []
    for (const [type, m] of Object.entries<any>(op.requestBody?.content ?? {})) media.push([`request ${type}`, m])
    for (const [status, r] of Object.entries<any>(op.responses))
      if (status.startsWith('2'))
        for (const [type, m] of Object.entries<any>(r.content ?? {})) media.push([`${status} ${type}`, m])
    for (const [where, m] of media) {
      // A download is bytes: its description says what the archive holds.
      if (m.schema?.format === 'binary') continue
      const component = m.schema?.$ref && doc.components.schemas[m.schema.$ref.split('/').pop()]
      const examples = [
        ...(m.example !== undefined ? [m.example] : []),
        ...Object.values<any>(m.examples ?? {}).map((e) => e.value),
        ...(component?.examples ?? []),
      ]
      if (!examples.length) {
        missing.push(`${op.operationId}: ${where}`)
        continue
      }
      // The event stream's example is its text.
      if (m.schema?.type === 'string') continue
      const validate = ajv.compile(rebase(m.schema))
      for (const example of examples)
        if (!validate(example))
          wrong.push(`${op.operationId} ${where}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(example)}`)
    }
  }
  assert.deepEqual(missing, [], 'operations without an example')
  assert.deepEqual(wrong, [], 'examples that do not match their schema')
})

function* operations(): Generator<[string, string, any]> {
  for (const [path, ops] of Object.entries<any>(doc.paths))
    for (const [method, op] of Object.entries<any>(ops)) yield [path, method, op]
}

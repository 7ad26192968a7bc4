// One contract, every driver: the filesystem driver on a temporary directory and the S3 driver against
// s3rver (a real S3-compatible HTTP server, started here on a free loopback port).
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import S3rver from 's3rver'
import { loadConfig } from '../../src/config.js'
import { createStorage } from '../../src/storage/create-storage.js'
import type { Storage } from '../../src/storage/storage.js'
import { freePort } from '../helpers/service.js'

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

async function text(s: Readable) {
  const chunks: Buffer[] = []
  for await (const c of s) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

interface Driver {
  name: string
  make(): Promise<{ storage: Storage; cleanup(): Promise<void> }>
}

let s3rver: S3rver | null = null
let s3Port = 0
let s3Dir = ''
const BUCKET = 'refit-contract'

before(async () => {
  s3Dir = await mkdtemp(join(tmpdir(), 'refit-s3rver-'))
  s3Port = await freePort()
  s3rver = new S3rver({
    port: s3Port,
    address: '127.0.0.1',
    silent: true,
    directory: s3Dir,
    configureBuckets: [{ name: BUCKET, configs: [] }],
  })
  await s3rver.run()
})

after(async () => {
  await s3rver?.close()
  await rm(s3Dir, { recursive: true, force: true })
})

let n = 0
const drivers: Driver[] = [
  {
    name: 'fs',
    async make() {
      const dir = await mkdtemp(join(tmpdir(), 'refit-fs-contract-'))
      const storage = await createStorage(loadConfig({ STORAGE_DIR: dir }))
      await storage.init()
      return { storage, cleanup: () => rm(dir, { recursive: true, force: true }) }
    },
  },
  {
    name: 's3',
    async make() {
      const dir = await mkdtemp(join(tmpdir(), 'refit-s3-contract-'))
      const storage = await createStorage(
        loadConfig({
          STORAGE_DIR: dir,
          STORAGE_DRIVER: 's3',
          S3_BUCKET: BUCKET,
          S3_ENDPOINT: `http://127.0.0.1:${s3Port}`,
          S3_REGION: 'us-east-1',
          S3_ACCESS_KEY_ID: 'S3RVER',
          S3_SECRET_ACCESS_KEY: 'S3RVER',
          S3_FORCE_PATH_STYLE: 'true',
        }),
      )
      await storage.init()
      // Each storage gets its own key space in the shared bucket: nothing one test wrote leaks into another.
      n++
      const prefix = `run${n}`
      return {
        storage: scoped(storage, prefix),
        async cleanup() {
          await storage.remove(prefix)
          await rm(dir, { recursive: true, force: true })
        },
      }
    },
  },
]

/** The same storage with every key under `prefix/` (the bucket is shared by the s3 tests). */
function scoped(s: Storage, prefix: string): Storage {
  const k = (key: string) => (key ? `${prefix}/${key}` : prefix)
  const strip = (key: string) => key.slice(prefix.length + 1)
  return {
    driver: s.driver,
    localRoot: s.localRoot,
    init: () => s.init(),
    put: async (key, body) => ({ ...(await s.put(k(key), body)), path: key }),
    writeStream: async (key, src) => ({ ...(await s.writeStream(k(key), src)), path: key }),
    read: (key) => s.read(k(key)),
    remove: (key) => s.remove(k(key)),
    exists: (key) => s.exists(k(key)),
    digest: async (key) => ({ ...(await s.digest(k(key))), path: key }),
    list: async (p) => (await s.list(k(p))).map((e) => ({ ...e, key: strip(e.key) })),
    sweepTmp: (ms) => s.sweepTmp(ms),
    tmpPath: () => s.tmpPath(),
    localPath: (key) => s.localPath(k(key)),
    workPath: (key) => s.workPath(k(key)),
    putDir: async (key, dir) => ({ ...(await s.putDir(k(key), dir)), path: key }),
    keyOf: (p) => strip(s.keyOf(p)),
  }
}

const digests: Record<string, Record<string, string>> = {}

for (const driver of drivers) {
  describe(`storage contract: ${driver.name}`, () => {
    let storage: Storage
    let cleanup: () => Promise<void>
    before(async () => {
      ;({ storage, cleanup } = await driver.make())
    })
    after(async () => cleanup())

    test('put, read, exists, digest', async () => {
      const r = await storage.put('files/a', 'hello')
      assert.deepEqual(r, { path: 'files/a', bytes: 5, sha256: sha('hello') })
      assert.equal(await text(await storage.read('files/a')), 'hello')
      assert.equal(await storage.exists('files/a'), true)
      assert.equal(await storage.exists('files/b'), false)
      assert.deepEqual(await storage.digest('files/a'), r)
    })

    test('writeStream streams and hashes; a failed stream leaves nothing', async () => {
      const body = Buffer.alloc(3 * 1024 * 1024, 7)
      const r = await storage.writeStream('files/big', Readable.from([body.subarray(0, 1e6), body.subarray(1e6)]))
      assert.equal(r.bytes, body.length)
      assert.equal(r.sha256, sha(body))
      const broken = new Readable({
        read() {
          this.destroy(new Error('client went away'))
        },
      })
      await assert.rejects(storage.writeStream('files/broken', broken), /client went away/)
      assert.equal(await storage.exists('files/broken'), false)
    })

    test('read of a missing key rejects', async () => {
      await assert.rejects(storage.read('files/none'))
    })

    test('list is the key and what is under key/, in path order, never a sibling with the same start', async () => {
      await storage.put('models/m1/model.json', '{}')
      await storage.put('models/m1/weights.bin', Buffer.from([1, 2, 3]))
      await storage.put('models/m1/sub/x', 'x')
      await storage.put('models/m1-other/model.json', '{}')
      await storage.put('models/m1a', 'sibling')
      const keys = (await storage.list('models/m1')).map((e) => e.key)
      assert.deepEqual(keys, ['models/m1/model.json', 'models/m1/sub/x', 'models/m1/weights.bin'])
      assert.deepEqual(
        (await storage.list('models/m1')).map((e) => e.bytes),
        [2, 1, 3],
      )
      assert.equal(await storage.exists('models/m1'), true)
    })

    test('digest of a directory is the same whichever driver stored it', async () => {
      const d = await storage.digest('models/m1')
      assert.equal(d.bytes, 6)
      digests[driver.name] = { dir: d.sha256 }
      if (digests.fs && digests.s3) assert.equal(digests.fs.dir, digests.s3.dir)
    })

    test('remove takes a prefix and is quiet on missing keys', async () => {
      await storage.remove('models/m1')
      assert.equal(await storage.exists('models/m1'), false)
      assert.equal(await storage.exists('models/m1-other/model.json'), true)
      assert.equal(await storage.exists('models/m1a'), true)
      await storage.remove('models/never-there')
    })

    test('putDir stores a local directory; localPath materializes it; keyOf inverts workPath', async () => {
      const work = storage.workPath('jobs/j1/attempt-1/model')
      await mkdir(join(work, 'nested'), { recursive: true })
      await writeFile(join(work, 'model.json'), '{"a":1}')
      await writeFile(join(work, 'nested', 'w.bin'), Buffer.from([9, 9]))
      assert.equal(storage.keyOf(work), 'jobs/j1/attempt-1/model')
      const d = await storage.putDir('jobs/j1/attempt-1/model', work)
      assert.equal(d.bytes, 9)
      assert.deepEqual(await storage.digest('jobs/j1/attempt-1/model'), d)
      assert.deepEqual(
        (await storage.list('jobs/j1')).map((e) => e.key),
        ['jobs/j1/attempt-1/model/model.json', 'jobs/j1/attempt-1/model/nested/w.bin'],
      )
      // from somewhere else (an upload's temporary directory)
      const other = join(storage.localRoot, 'tmp', 'elsewhere')
      await mkdir(other, { recursive: true })
      await writeFile(join(other, 'model.json'), 'x')
      await storage.putDir('models/up1', other)
      const local = await storage.localPath('models/up1')
      assert.equal(await readFile(join(local, 'model.json'), 'utf8'), 'x')
    })

    test('localPath gives a readable local copy of an object and of a prefix', async () => {
      await storage.put('files/local', 'abc')
      assert.equal(await readFile(await storage.localPath('files/local'), 'utf8'), 'abc')
      const dir = await storage.localPath('models/m1-other')
      assert.deepEqual(await readdir(dir), ['model.json'])
    })

    test('sweepTmp removes only old temporary files', async () => {
      const old = storage.tmpPath()
      const fresh = storage.tmpPath()
      await writeFile(old, 'old')
      await writeFile(fresh, 'fresh')
      const past = new Date(Date.now() - 3600_000)
      await utimes(old, past, past)
      assert.ok((await storage.sweepTmp(60_000)) >= 1)
      assert.equal(existsSync(old), false)
      assert.equal(existsSync(fresh), true)
    })
  })
}

test('the s3 driver materializes from the bucket when its local cache is empty', async () => {
  const dirA = await mkdtemp(join(tmpdir(), 'refit-s3-a-'))
  const dirB = await mkdtemp(join(tmpdir(), 'refit-s3-b-'))
  const env = {
    STORAGE_DRIVER: 's3',
    S3_BUCKET: BUCKET,
    S3_ENDPOINT: `http://127.0.0.1:${s3Port}`,
    S3_ACCESS_KEY_ID: 'S3RVER',
    S3_SECRET_ACCESS_KEY: 'S3RVER',
    S3_FORCE_PATH_STYLE: 'true',
  }
  const a = await createStorage(loadConfig({ ...env, STORAGE_DIR: dirA }))
  const b = await createStorage(loadConfig({ ...env, STORAGE_DIR: dirB }))
  try {
    await a.init()
    await b.init()
    const work = a.workPath('shared/model')
    await mkdir(work, { recursive: true })
    await writeFile(join(work, 'model.json'), '{"from":"a"}')
    await a.putDir('shared/model', work)
    // another machine (another cache) sees it
    const local = await b.localPath('shared/model')
    assert.ok(local.startsWith(dirB))
    assert.equal(await readFile(join(local, 'model.json'), 'utf8'), '{"from":"a"}')
    await b.remove('shared')
    assert.equal(await a.exists('shared/model'), false)
  } finally {
    await rm(dirA, { recursive: true, force: true })
    await rm(dirB, { recursive: true, force: true })
  }
})

test('STORAGE_DRIVER=s3 without a bucket fails at start, naming the variable', () => {
  assert.throws(() => loadConfig({ STORAGE_DRIVER: 's3' }), /S3_BUCKET/)
  assert.throws(() => loadConfig({ STORAGE_DRIVER: 's3', S3_BUCKET: 'ok-bucket', S3_ACCESS_KEY_ID: 'x' }), /S3_/)
})

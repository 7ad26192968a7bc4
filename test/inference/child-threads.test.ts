// The pool's children share the cores out: one inter-op thread each, and the cores divided among the pool's
// processes as intra-op threads (at least one), so N processes never run N x cores TensorFlow threads.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { childThreads } from '../../src/inference/pool.js'

test('intra-op threads are the cores divided among the processes, at least one; one inter-op thread', () => {
  assert.deepEqual(childThreads(2, 2), { TF_NUM_INTEROP_THREADS: '1', TF_NUM_INTRAOP_THREADS: '1' })
  assert.equal(childThreads(1, 2).TF_NUM_INTRAOP_THREADS, '2')
  assert.equal(childThreads(2, 8).TF_NUM_INTRAOP_THREADS, '4')
  assert.equal(childThreads(3, 8).TF_NUM_INTRAOP_THREADS, '2')
  assert.equal(childThreads(4, 2).TF_NUM_INTRAOP_THREADS, '1')
})

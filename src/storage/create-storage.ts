// Picks the storage driver STORAGE_DRIVER names. Its own file so the drivers can import the interface
// in storage.ts without storage.ts importing them back.
import type { Config } from '../config.js'
import type { Storage } from './storage.js'

/** The driver STORAGE_DRIVER names. */
export async function createStorage(config: Config): Promise<Storage> {
  if (config.storageDriver === 's3') {
    const { S3Storage } = await import('./s3-storage.js')
    if (!config.s3) throw new Error('STORAGE_DRIVER=s3 needs S3_BUCKET')
    return new S3Storage(config.storageDir, config.s3)
  }
  const { LocalStorage } = await import('./local-storage.js')
  return new LocalStorage(config.storageDir)
}

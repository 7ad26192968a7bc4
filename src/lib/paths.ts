import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The checkout's root (where package.json is), from src/ under tsx or from dist/src/ when compiled. */
export const projectRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json')) || dir.endsWith('/dist')) {
    const up = dirname(dir)
    if (up === dir) throw new Error('package.json not found above src/lib')
    dir = up
  }
  return dir
})()

export const migrationsDir = join(projectRoot, 'prisma', 'migrations')

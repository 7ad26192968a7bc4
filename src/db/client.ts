import { PrismaPg } from '@prisma/adapter-pg'
import { PrismaClient } from '../generated/prisma/client.js'

export type Db = PrismaClient
export { Prisma } from '../generated/prisma/client.js'

/** A Prisma client over node-postgres (Prisma 7's query compiler needs a driver adapter). */
export function createDb(databaseUrl: string, max = 10): Db {
  return new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl, max }) })
}

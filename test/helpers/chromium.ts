// Debian's chromium driven by playwright-core (`npx playwright install` cannot download browsers here).
// Without chromium, browser tests skip with a message; with CI=true they fail instead.
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { BrowserContext } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/** Returns a reason to skip, or null when chromium is there; on CI a missing chromium is an error. */
export function chromiumMissing(): string | null {
  if (existsSync(CHROMIUM)) return null
  if (process.env.CI === 'true')
    throw new Error(`${CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)`)
  return `${CHROMIUM} is missing (apt-get install -y chromium); browser tests skipped`
}

export async function launchChromium(): Promise<{ context: BrowserContext; close(): Promise<void> }> {
  const { chromium } = await import('playwright-core')
  const userDataDir = await mkdtemp(join(tmpdir(), 'refit-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  return {
    context,
    async close() {
      await context.close()
      await rm(userDataDir, { recursive: true, force: true })
    },
  }
}

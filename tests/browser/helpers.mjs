// Shared helpers for the browser suite: a ringgate gateway of the test's own on free loopback
// ports (stopped by PID), the system Chromium driven by playwright-core in real time (never a
// virtual time budget: it would fake phoenix.js's heartbeat timeouts), bounded waits, and where
// screenshots go (target/browser/, kept as CI artifacts).

import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { chromium } from 'playwright-core'

import { BIN, sleep, spawnGateway } from '../support/gateway.mjs'

export { BIN, sleep }

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
export const SHOTS = fileURLToPath(new URL('../../target/browser/', import.meta.url))
mkdirSync(SHOTS, { recursive: true })

export const LAPTOP = { width: 1366, height: 900 }
export const PHONE = { width: 390, height: 844 }

/** Polls `check` (async, truthy = done) every 100 ms; rejects naming `what` after `ms`. */
export async function waitFor (what, check, ms = 15000) {
  const deadline = Date.now() + ms
  let last
  while (Date.now() < deadline) {
    last = await check()
    if (last) return last
    await sleep(100)
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`)
}

/** `ringgate serve` on free ports with `args`; resolves once /healthz answers. */
export function startGateway (args = []) {
  return spawnGateway({ args: ['--log-level', 'warn', ...args] })
}

export function launch () {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in CI: Chromium's sandbox needs a user namespace it may not get.
    args: ['--no-sandbox', '--disable-dev-shm-usage']
  })
}

/**
 * A page of its own context (own sessionStorage) at `viewport`, recording console errors
 * (`page.errors`), WebSocket URLs (`page.sockets`) and requests (`page.requests`).
 */
export async function openPage (browser, url, viewport = LAPTOP, extra = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, ...extra })
  const page = await context.newPage()
  page.errors = []
  page.sockets = []
  page.requests = []
  page.on('websocket', ws => page.sockets.push(ws.url()))
  page.on('request', r => page.requests.push({ url: r.url(), headers: r.headers() }))
  page.on('pageerror', e => page.errors.push(String(e)))
  page.on('console', m => { if (m.type() === 'error') page.errors.push(m.text()) })
  await page.goto(url)
  return page
}

/** The integer in an element's text ("1,234" → 1234); NaN when it shows no number. */
export async function numberIn (page, selector) {
  const text = await page.textContent(selector)
  return Number(String(text).replace(/[^0-9]/g, '') || NaN)
}

// The live dashboard (GET / on the admin port) in real Chromium while `ringgate load` runs: the
// connection count on the page rises to the load's users and falls back to 0 after it; admin-API
// broadcasts show as broadcasts and as deliveries = members × broadcasts; per-worker rows add up.
// With an API key: the page asks for it, keeps it in sessionStorage and sends it as a header,
// never in a URL. Screenshots (laptop and phone): target/browser/dashboard-*.png.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { after, before, test } from 'node:test'

import { BIN, LAPTOP, PHONE, SHOTS, launch, numberIn, openPage, sleep, startGateway, waitFor } from './helpers.mjs'

const USERS = 400
// Long enough that no check below runs after the users left on a slow box; the test ends the run
// itself (SIGINT: the load closes its users and exits 0) once it has seen what it needs.
const LOAD_SECONDS = 120
const BROADCASTS = 5

let browser
before(async () => { browser = await launch() })
after(async () => { await browser?.close() })

function runLoad (port) {
  const child = spawn(BIN, ['load', '--url', `ws://127.0.0.1:${port}/socket/websocket`, '--scenario', 'phoenix-idle',
    '--users', String(USERS), '--arrival-rate', '200', '--duration', String(LOAD_SECONDS), '--workers', '1',
    '--quiet', '--out', `${SHOTS}load-report`], { stdio: ['ignore', 'ignore', 'inherit'] })
  const done = new Promise(resolve => child.once('exit', code => resolve(code)))
  // Bounded: the test interrupts the load, and it would stop itself after LOAD_SECONDS; this is
  // only a backstop.
  const backstop = setTimeout(() => child.kill('SIGKILL'), (LOAD_SECONDS + 30) * 1000)
  return { child, done: done.finally(() => clearTimeout(backstop)) }
}

test('the dashboard follows a load run up and down', async () => {
  const gw = await startGateway(['--workers', '2'])
  let load
  try {
    const page = await openPage(browser, `${gw.admin}/`, LAPTOP)
    const phone = await openPage(browser, `${gw.admin}/`, PHONE)
    await waitFor('the first figures', async () => (await page.textContent('#status')) === 'live')
    assert.equal(await numberIn(page, '#v-connections'), 0)
    assert.equal(await page.$$eval('#c-connections canvas', c => c.length), 1, 'a chart is drawn')

    load = runLoad(gw.port)
    const seen = []
    let sawConnectRate = false
    await waitFor(`${USERS} connections and memberships on the page`, async () => {
      const n = await numberIn(page, '#v-connections')
      seen.push(n)
      if ((await numberIn(page, '#v-connects-rate')) > 0) sawConnectRate = true
      return n === USERS && (await numberIn(page, '#v-memberships')) === USERS
    }, 20000)
    assert.ok(sawConnectRate, 'connects/s was above 0 during the ramp')
    assert.equal(await numberIn(page, '#v-topics'), 1)
    const rows = await page.$$eval('#workers tbody tr', trs => trs.map(tr => Number(tr.cells[1].textContent.replace(/,/g, ''))))
    assert.equal(rows.length, 2)
    assert.equal(rows[0] + rows[1], USERS)

    // Broadcasts through the admin API count, and reach every member.
    for (let i = 0; i < BROADCASTS; i++) {
      const r = await fetch(`${gw.admin}/api/broadcast`, {
        method: 'POST',
        body: JSON.stringify({ topic: 'rooms:lobby', event: 'news', payload: { n: i } })
      })
      assert.equal(r.status, 202)
      assert.equal((await r.json()).subscribers, USERS)
    }
    await waitFor('deliveries = members × broadcasts', async () =>
      (await numberIn(page, '#v-deliveries')) === USERS * BROADCASTS &&
      (await numberIn(page, '#v-admin-broadcasts')) === BROADCASTS &&
      (await numberIn(page, '#v-broadcasts')) === BROADCASTS)
    await waitFor('a latency p99', async () => /^(≤|>)/.test(await page.textContent('#v-latency-p99')))
    assert.match(await page.textContent('#v-user-bytes'), /^\d+(\.\d+)? (B|KiB)$/)
    await sleep(1200) // one more poll so the charts carry the broadcast
    await page.screenshot({ path: `${SHOTS}dashboard-laptop-load.png`, fullPage: true })
    await phone.screenshot({ path: `${SHOTS}dashboard-phone-load.png`, fullPage: true })
    await phone.screenshot({ path: `${SHOTS}dashboard-phone-screen.png` })
    // The phone layout is one column: no card wider than the screen.
    const widest = await phone.$$eval('.card', cards => Math.max(...cards.map(c => c.getBoundingClientRect().right)))
    assert.ok(widest <= PHONE.width, `a card overflows the phone screen (right edge ${widest})`)

    load.child.kill('SIGINT')
    assert.equal(await load.done, 0, 'ringgate load exited with status 0')
    await waitFor('connections back to 0 on the page', async () => (await numberIn(page, '#v-connections')) === 0, 20000)
    // The phone page polls on its own clock: it follows within a poll or two.
    await waitFor('connections back to 0 on the phone', async () => (await numberIn(phone, '#v-connections')) === 0, 10000)
    assert.ok(Math.max(...seen) <= USERS)
    await page.screenshot({ path: `${SHOTS}dashboard-laptop-after.png`, fullPage: true })
    assert.deepEqual(page.errors, [])
    assert.deepEqual(phone.errors, [])
  } finally {
    // A failed check above leaves the load running: end it (the process this test started).
    if (load && load.child.exitCode === null && load.child.signalCode === null) load.child.kill('SIGKILL')
    await gw.stop()
  }
})

test('with an API key the dashboard asks for it and sends it as a header only', async () => {
  const KEY = 'dash-key-93f1'
  const gw = await startGateway(['--workers', '1', '--api-key', KEY])
  try {
    const page = await openPage(browser, `${gw.admin}/`, LAPTOP)
    await page.waitForSelector('#keyform:not([hidden])', { timeout: 10000 })
    assert.equal(await page.textContent('#status'), 'key needed')
    assert.equal(await page.textContent('#v-connections'), '–')
    await page.screenshot({ path: `${SHOTS}dashboard-key-prompt.png` })

    await page.fill('#key', 'wrong')
    await page.press('#key', 'Enter')
    await waitFor('the wrong key refused', async () =>
      /refused/.test(await page.textContent('#key-why')) && !(await page.isHidden('#keyform')))

    await page.fill('#key', KEY)
    await page.click('#keyform button[type=submit]')
    await waitFor('figures with the key', async () => (await page.textContent('#status')) === 'live')
    assert.equal(await numberIn(page, '#v-connections'), 0)
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ringgate-admin-key')), KEY)

    await page.reload()
    await waitFor('figures after a reload, from sessionStorage', async () => (await page.textContent('#status')) === 'live')
    assert.ok(await page.isHidden('#keyform'))

    const stats = page.requests.filter(r => r.url.endsWith('/api/stats'))
    assert.ok(stats.some(r => r.headers.authorization === `Bearer ${KEY}`))
    for (const r of page.requests) assert.ok(!r.url.includes(KEY), `key in a URL: ${r.url}`)
    assert.deepEqual(page.errors.filter(e => !/401/.test(e)), [])
  } finally {
    await gw.stop()
  }
})

test('bus and presence sections appear with whatever fields /api/stats gives them', async () => {
  const gw = await startGateway(['--workers', '1'])
  try {
    const context = await browser.newContext({ viewport: LAPTOP })
    const page = await context.newPage()
    // The gateway's real snapshot, with the objects another subsystem would add: the page must
    // show them as they come (these names are made up on purpose, the page knows none of them).
    await context.route('**/api/stats', async route => {
      const response = await route.fetch()
      const stats = await response.json()
      stats.bus = { state: 'connected', published_total: 1234, shards: [{ name: 'a', up: true }] }
      stats.presence = { tracked: 7 }
      await route.fulfill({ response, json: stats })
    })
    await page.goto(`${gw.admin}/`)
    await waitFor('the bus card', async () => !(await page.isHidden('#bus-card')))
    const pairs = await page.$$eval('#bus dt, #bus dd', els => els.map(e => e.textContent))
    assert.deepEqual(pairs, ['state', 'connected', 'published_total', '1,234', 'shards[0].name', 'a', 'shards[0].up', 'true'])
    assert.deepEqual(await page.$$eval('#presence dt, #presence dd', els => els.map(e => e.textContent)), ['tracked', '7'])
    await page.screenshot({ path: `${SHOTS}dashboard-sections.png`, fullPage: true })
    await context.close()

    // Without them (this gateway's real snapshot) the cards stay hidden.
    const plain = await openPage(browser, `${gw.admin}/`, LAPTOP)
    await waitFor('figures', async () => (await plain.textContent('#status')) === 'live')
    assert.ok(await plain.isHidden('#bus-card'))
    assert.ok(await plain.isHidden('#presence-card'))
  } finally {
    await gw.stop()
  }
})

// The seed's chat app (GET /chat on the admin port) in two real Chromium pages, one the size of a
// laptop and one of a phone: both join rooms:lobby over the browser's own WebSocket on load, one
// sends with Enter and the other with the Send button, and each page shows both messages under
// the right names. Screenshots: target/browser/chat-*.png.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import { LAPTOP, PHONE, SHOTS, launch, openPage, startGateway, waitFor } from './helpers.mjs'

let gw
let browser
before(async () => {
  gw = await startGateway(['--workers', '2'])
  browser = await launch()
})
after(async () => {
  await browser?.close()
  await gw?.stop()
})

async function openChat (viewport, name) {
  const page = await openPage(browser, `${gw.admin}/chat`, viewport)
  await page.waitForSelector('body[data-joined="true"]', { timeout: 10000 })
  const defaultName = await page.inputValue('#name')
  assert.match(defaultName, /^guest-\d{4}$/)
  await page.fill('#name', name)
  return page
}

async function messages (page) {
  return page.$$eval('#messages li:not(.system)', lis => lis.map(li => ({
    who: li.querySelector('.who')?.textContent,
    body: li.childNodes[1]?.textContent,
    mine: li.classList.contains('mine')
  })))
}

test('two chat pages exchange messages in rooms:lobby', async () => {
  const alice = await openChat(LAPTOP, 'alice')
  const bob = await openChat(PHONE, 'bob')
  // Both are members now, through the browsers' native WebSockets (never long-poll).
  const subs = await (await fetch(`${gw.admin}/api/topics/rooms:lobby`)).json()
  assert.equal(subs.subscribers, 2)
  for (const page of [alice, bob]) {
    assert.equal(page.sockets.length, 1)
    assert.match(page.sockets[0], new RegExp(`^ws://127\\.0\\.0\\.1:${gw.port}/socket/websocket\\?vsn=2\\.0\\.0$`))
  }

  await alice.fill('#body', 'hello from alice')
  await alice.press('#body', 'Enter')
  await bob.fill('#body', 'hi alice, bob here')
  await bob.click('#send-button')

  const want = [
    { who: 'alice', body: 'hello from alice' },
    { who: 'bob', body: 'hi alice, bob here' }
  ]
  for (const [page, me] of [[alice, 'alice'], [bob, 'bob']]) {
    const got = await waitFor(`both messages on ${me}'s page`, async () => {
      const m = await messages(page)
      return m.length === 2 ? m : null
    })
    // The order may differ between pages (both were sent at once): compare by body, and check
    // which one is marked as the page's own.
    const byBody = Object.fromEntries(got.map(m => [m.body, m]))
    for (const w of want) {
      assert.equal(byBody[w.body]?.who, w.who, JSON.stringify(got))
      assert.equal(byBody[w.body].mine, w.who === me)
    }
    assert.equal(await page.inputValue('#body'), '', 'the field is cleared after sending')
  }
  // The admin API's publish shows up too, as anyone's message would.
  const r = await fetch(`${gw.admin}/api/broadcast`, {
    method: 'POST',
    body: JSON.stringify({ topic: 'rooms:lobby', event: 'new_msg', payload: { user: 'ops', body: 'maintenance at noon' } })
  })
  assert.equal(r.status, 202)
  for (const page of [alice, bob]) {
    await waitFor('the admin message', async () => (await messages(page)).some(m => m.who === 'ops'))
    assert.equal(await page.textContent('#status'), 'joined')
  }
  await alice.screenshot({ path: `${SHOTS}chat-laptop.png` })
  await bob.screenshot({ path: `${SHOTS}chat-phone.png` })
  assert.deepEqual(alice.errors, [])
  assert.deepEqual(bob.errors, [])
})

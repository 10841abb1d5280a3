// Exact frames with the bare `ws` package, no Phoenix client in between: the seed's Tsung scenario
// (V1, no vsn), the vsn check at the upgrade, and the server's duplicate-join rule (V2).

import assert from 'node:assert/strict'
import { test } from 'node:test'

import WebSocket from 'ws'

import {
  WAIT_MS, WS_URL, admin, nonce, openRaw, sleep, subscribers, uniqueTopic, withTimeout
} from './helpers.mjs'

const T = { timeout: 15_000 }
const OK = { status: 'ok', response: {} }

test('seed scenario: V1 join of rooms:lobby, idle, then an admin broadcast arrives', T, async t => {
  const c = await openRaw(t) // no vsn: V1
  c.send('{"topic":"rooms:lobby","event":"phx_join","payload":{"user":"42"},"ref":"1"}')
  assert.deepEqual(await c.next('join reply'),
    { topic: 'rooms:lobby', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: '1' })
  // Load tools match replies as text (Tsung's <match>), so the bytes are checked too.
  assert.equal(c.frames[0].text,
    '{"topic":"rooms:lobby","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"1"}')

  await sleep(1000)
  assert.equal(c.ws.readyState, WebSocket.OPEN, 'an idle member stays connected')
  // rooms:lobby is shared with other test files: only their broadcasts may have arrived.
  for (const f of c.frames.slice(1)) assert.equal(JSON.parse(f.text).ref, null, f.text)

  const id = nonce()
  const res = await admin('/api/broadcast', {
    method: 'POST', body: { topic: 'rooms:lobby', event: 'new_msg', payload: { id, body: 'seed' } }
  })
  assert.equal(res.status, 202, res.text)
  assert.ok(res.json.subscribers >= 1, res.text)
  const msg = await c.next('admin broadcast', m => m.payload?.id === id)
  assert.deepEqual(msg, { topic: 'rooms:lobby', event: 'new_msg', payload: { id, body: 'seed' }, ref: null })
  assert.ok(c.frames.every(f => !f.isBinary), 'V1 frames are text')
})

function upgradeStatus (query) {
  const ws = new WebSocket(`${WS_URL}${query}`)
  return withTimeout(new Promise((resolve, reject) => {
    ws.once('open', () => { ws.terminate(); resolve(101) })
    ws.once('unexpected-response', (_req, res) => { res.resume(); ws.terminate(); resolve(res.statusCode) })
    ws.once('error', err => { if (ws.readyState !== WebSocket.CLOSED) reject(err) })
  }), `upgrade ${query}`, WAIT_MS)
}

// ringgate deliberately accepts any MAJOR[.MINOR[.PATCH]] of majors 1 and 2 (src/phoenix/mod.rs),
// where Phoenix wants ~> 1.0.0 / ~> 2.0.0: only other majors and non-versions are checked here.
test('an unknown vsn is refused with HTTP 403; known ones upgrade', T, async () => {
  for (const query of ['?vsn=3.0.0', '?vsn=', '?vsn=v2', '?token=x&vsn=9.0.0']) {
    assert.equal(await upgradeStatus(query), 403, `vsn in ${query}`)
  }
  for (const query of ['', '?vsn=1.0.0', '?vsn=2.0.0', '?token=x&vsn=2.0.0']) {
    assert.equal(await upgradeStatus(query), 101, `vsn in ${query}`)
  }
})

test('V2 duplicate join: the new join\'s reply, then phx_close for the old join_ref; old refs are stale', T, async t => {
  const c = await openRaw(t, '?vsn=2.0.0')
  const topic = uniqueTopic()
  c.send(['1', '1', topic, 'phx_join', {}])
  assert.deepEqual(await c.next('first join reply'), ['1', '1', topic, 'phx_reply', OK])

  c.send(['2', '2', topic, 'phx_join', {}])
  // Phoenix (Phoenix.Socket.handle_in/4) writes the new join's reply before the old join's close.
  assert.deepEqual(await c.next('second join reply'), ['2', '2', topic, 'phx_reply', OK])
  assert.deepEqual(await c.next('close of the old join'), ['1', '1', topic, 'phx_close', {}])
  assert.equal(await subscribers(topic), 1)

  // A push under the old join_ref is dropped silently; under the new one it is broadcast.
  const stale = nonce()
  const fresh = nonce()
  c.send(['1', '3', topic, 'new_msg', { id: stale }])
  c.send(['2', '4', topic, 'new_msg', { id: fresh }])
  // Phoenix sends the broadcast before the reply, but either order is valid on the wire.
  const rest = [await c.next('broadcast or reply'), await c.next('reply or broadcast')]
  rest.sort((x, y) => (x[1] ?? '').localeCompare(y[1] ?? ''))
  assert.deepEqual(rest, [
    [null, null, topic, 'new_msg', { id: fresh }],
    ['2', '4', topic, 'phx_reply', OK]
  ])
  await sleep(200)
  assert.equal(c.frames.length, 5, `no reply to the stale push, one copy of the broadcast: ${c.frames.map(f => f.text).join(' ')}`)
})

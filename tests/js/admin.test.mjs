// The admin API (publish, topic counts, bearer key) against channels joined with phoenix.js 1.8.
// Exact counts use topics of their own: other test files may run at the same time and share
// rooms:lobby.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  ADMIN_KEY, admin, join, leave, nextEvent, nonce, openSocket, recorder, sleep, subscribers,
  uniqueTopic, withTimeout
} from './helpers.mjs'

const T = { timeout: 15_000 }

test('a published broadcast reaches every joined channel and the 202 counts them', T, async t => {
  const a = await openSocket(t)
  const b = await openSocket(t)
  const topic = uniqueTopic()
  const aChan = await join(a, topic)
  const bChan = await join(b, topic)
  assert.equal(await subscribers(topic), 2)

  const frames = recorder()
  a.onMessage(frames.record)
  const id = nonce()
  const payload = { id, body: 'from the admin API', n: [1, 2.5, null, true], nested: { 'ü': 'é' } }
  const atA = nextEvent(aChan, 'announcement', id)
  const atB = nextEvent(bChan, 'announcement', id)
  const res = await admin('/api/broadcast', {
    method: 'POST', body: { topic, event: 'announcement', payload }
  })
  assert.equal(res.status, 202, res.text)
  assert.deepEqual(res.json, { broadcasts: 1, subscribers: 2 })
  assert.deepEqual(await atA, payload)
  assert.deepEqual(await atB, payload)
  assert.deepEqual(frames.items.find(m => m.event === 'announcement'),
    { join_ref: null, ref: null, topic, event: 'announcement', payload })
})

test('an array publishes each broadcast and sums the subscribers', T, async t => {
  const a = await openSocket(t)
  const b = await openSocket(t)
  const first = uniqueTopic()
  const second = uniqueTopic()
  const empty = uniqueTopic()
  const aFirst = await join(a, first)
  const bFirst = await join(b, first)
  const aSecond = await join(a, second)

  const id = nonce()
  const got = [
    nextEvent(aFirst, 'one', id), nextEvent(bFirst, 'one', id), nextEvent(aSecond, 'two', id)
  ]
  const res = await admin('/api/broadcast', {
    method: 'POST',
    body: [
      { topic: first, event: 'one', payload: { id } },
      { topic: second, event: 'two', payload: { id } },
      { topic: empty, event: 'three', payload: { id } }
    ]
  })
  assert.equal(res.status, 202, res.text)
  assert.deepEqual(res.json, { broadcasts: 3, subscribers: 3 })
  await Promise.all(got)
})

test('topic counts follow joins, leaves and disconnects', T, async t => {
  const a = await openSocket(t)
  const b = await openSocket(t)
  const topic = uniqueTopic()
  assert.equal(await subscribers(topic), 0)
  const aChan = await join(a, topic)
  assert.equal(await subscribers(topic), 1)
  await join(b, topic)
  assert.equal(await subscribers(topic), 2)
  await leave(a, aChan)
  assert.equal(await subscribers(topic), 1)
  await withTimeout(new Promise(resolve => b.disconnect(resolve)), 'disconnect')
  // The server learns of the close asynchronously: poll briefly.
  const deadline = Date.now() + 3000
  let n
  while ((n = await subscribers(topic)) !== 0 && Date.now() < deadline) {
    await sleep(50)
  }
  assert.equal(n, 0, 'a closed connection is no longer subscribed')
})

test('GET /api/topics/rooms:lobby counts a joined lobby member', T, async t => {
  const socket = await openSocket(t)
  await join(socket, 'rooms:lobby')
  const res = await admin('/api/topics/rooms:lobby')
  assert.equal(res.status, 200)
  assert.equal(res.json.topic, 'rooms:lobby')
  assert.ok(Number.isInteger(res.json.subscribers) && res.json.subscribers >= 1, res.text)
})

test('malformed publish requests get 400 and reach nobody', T, async t => {
  const socket = await openSocket(t)
  const topic = uniqueTopic()
  const channel = await join(socket, topic)
  const seen = recorder()
  channel.on('bad', seen.record)

  const bodies = [
    '{"topic":', // truncated JSON
    'not json',
    JSON.stringify({ topic, event: 'bad' }), // no payload
    JSON.stringify({ topic, payload: {} }), // no event
    JSON.stringify({ topic: '', event: 'bad', payload: {} }),
    JSON.stringify([{ topic, event: 'bad', payload: {} }, { topic }]) // one bad entry spoils all
  ]
  for (const body of bodies) {
    const res = await admin('/api/broadcast', { method: 'POST', body })
    assert.equal(res.status, 400, `${body} → ${res.status} ${res.text}`)
    assert.equal(typeof res.json?.error, 'string', `error reason for ${body}: ${res.text}`)
  }
  // A good publish afterwards proves the bad ones were not just slow.
  const id = nonce()
  const good = nextEvent(channel, 'bad', id)
  const ok = await admin('/api/broadcast', {
    method: 'POST', body: { topic, event: 'bad', payload: { id } }
  })
  assert.equal(ok.status, 202)
  await good
  assert.deepEqual(seen.items, [{ id }])
})

test('the admin API requires the configured bearer key', { ...T, skip: !ADMIN_KEY && 'no api_key in ringgate.toml' }, async t => {
  const topic = uniqueTopic()
  const publish = { topic, event: 'x', payload: {} }
  const cases = [
    { auth: false },
    { auth: false, headers: { authorization: 'Bearer wrong-key' } },
    { auth: false, headers: { authorization: ADMIN_KEY } }, // no "Bearer " scheme
    { auth: false, headers: { authorization: `Basic ${ADMIN_KEY}` } }
  ]
  for (const c of cases) {
    const post = await admin('/api/broadcast', { method: 'POST', body: publish, ...c })
    assert.equal(post.status, 401, `POST with ${JSON.stringify(c.headers ?? {})}`)
    const get = await admin(`/api/topics/${topic}`, c)
    assert.equal(get.status, 401, `GET with ${JSON.stringify(c.headers ?? {})}`)
  }
  const ok = await admin('/api/broadcast', { method: 'POST', body: publish })
  assert.equal(ok.status, 202)
  assert.equal((await admin(`/api/topics/${topic}`)).status, 200)
})

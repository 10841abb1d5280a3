// Channel life cycle through the official phoenix.js 1.8 client: join, push, broadcast to every
// member (sender included), leave, several channels per topic and per socket, duplicate joins.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  connect, join, newSocket, nextEvent, nonce, openSocket, recorder, replyOf, sleep, subscribers,
  uniqueTopic, waitFor
} from './helpers.mjs'

const T = { timeout: 15_000 }

test('a push on rooms:lobby reaches both members, sender included, and the sender gets ok', T, async t => {
  const alice = await openSocket(t)
  const bob = await openSocket(t)
  const aliceLobby = await join(alice, 'rooms:lobby', { nick: 'alice' })
  const bobLobby = await join(bob, 'rooms:lobby', { nick: 'bob' })

  const id = nonce()
  const atAlice = nextEvent(aliceLobby, 'new_msg', id)
  const atBob = nextEvent(bobLobby, 'new_msg', id)
  const reply = replyOf(aliceLobby.push('new_msg', { id, body: 'hi' }), 'reply to new_msg')

  assert.deepEqual(await reply, { status: 'ok', response: {} })
  assert.deepEqual(await atAlice, { id, body: 'hi' })
  assert.deepEqual(await atBob, { id, body: 'hi' })
})

test('broadcast frames carry null join_ref and ref', T, async t => {
  const socket = await openSocket(t)
  const topic = uniqueTopic()
  const channel = await join(socket, topic)
  const frames = recorder()
  socket.onMessage(frames.record)

  const id = nonce()
  const got = nextEvent(channel, 'new_msg', id)
  await replyOf(channel.push('new_msg', { id }))
  await got
  const broadcast = frames.items.find(m => m.event === 'new_msg')
  assert.deepEqual(broadcast, { join_ref: null, ref: null, topic, event: 'new_msg', payload: { id } })
  const reply = frames.items.find(m => m.event === 'phx_reply')
  assert.equal(reply.join_ref, channel.joinRef(), 'a reply echoes the join_ref')
})

test('leave: the server replies ok, then closes the channel with ref = join_ref', T, async t => {
  const socket = await openSocket(t)
  const topic = uniqueTopic()
  const channel = await join(socket, topic)
  const joinRef = channel.joinRef()
  assert.equal(await subscribers(topic), 1)

  const frames = recorder()
  socket.onMessage(m => { if (m.topic === topic) frames.record(m) })
  const serverClose = waitFor(cb => socket.onMessage(cb), 'phx_close frame', {
    accept: m => m.topic === topic && m.event === 'phx_close'
  })
  const closed = waitFor(cb => channel.onClose(cb), 'channel.onClose')
  // phoenix.js reports the leave ok (and closes the channel) at once, without waiting for the
  // server, so the server's own reply is checked on the wire below.
  const push = channel.leave()
  assert.deepEqual(await replyOf(push, 'leave reply'), { status: 'ok', response: {} })
  await closed
  assert.equal(channel.state, 'closed')
  await serverClose
  assert.deepEqual(frames.items, [
    { join_ref: joinRef, ref: push.ref, topic, event: 'phx_reply', payload: { status: 'ok', response: {} } },
    { join_ref: joinRef, ref: joinRef, topic, event: 'phx_close', payload: {} }
  ])
  assert.equal(await subscribers(topic), 0, 'a left channel is no longer subscribed')
})

test('a second socket in the same topic works and both receive broadcasts', T, async t => {
  const a = await openSocket(t)
  const b = await openSocket(t)
  const topic = uniqueTopic()
  const other = uniqueTopic()
  const aMain = await join(a, topic)
  const aOther = await join(a, other)
  const bMain = await join(b, topic)
  assert.equal(await subscribers(topic), 2)
  assert.equal(await subscribers(other), 1)

  const seen = { aMain: recorder(), aOther: recorder(), bMain: recorder() }
  aMain.on('new_msg', seen.aMain.record)
  aOther.on('new_msg', seen.aOther.record)
  bMain.on('new_msg', seen.bMain.record)

  const id = nonce()
  const atA = nextEvent(aMain, 'new_msg', id)
  const atB = nextEvent(bMain, 'new_msg', id)
  assert.equal((await replyOf(bMain.push('new_msg', { id }))).status, 'ok')
  await Promise.all([atA, atB])

  // A push on the other topic stays there.
  const id2 = nonce()
  const onOther = nextEvent(aOther, 'new_msg', id2)
  assert.equal((await replyOf(aOther.push('new_msg', { id: id2 }))).status, 'ok')
  await onOther
  await sleep(200)
  assert.deepEqual(seen.aMain.items, [{ id }])
  assert.deepEqual(seen.bMain.items, [{ id }])
  assert.deepEqual(seen.aOther.items, [{ id: id2 }])
})

test('a duplicate join on one socket: the client leaves the old channel, the new one gets each broadcast once', T, async t => {
  const socket = await openSocket(t)
  const topic = uniqueTopic()
  const first = await join(socket, topic)
  const firstClosed = waitFor(cb => first.onClose(cb), 'old channel closed')

  // phoenix.js sends phx_leave for the open channel before the second phx_join.
  const second = await join(socket, topic)
  await firstClosed
  assert.notEqual(second.joinRef(), first.joinRef())
  assert.equal(await subscribers(topic), 1)

  const got = recorder()
  second.on('new_msg', got.record)
  const id = nonce()
  const arrived = nextEvent(second, 'new_msg', id)
  assert.equal((await replyOf(second.push('new_msg', { id }))).status, 'ok')
  await arrived
  await sleep(200)
  assert.deepEqual(got.items, [{ id }], 'exactly one copy of the broadcast')
})

test('a binary payload (ArrayBuffer) is pushed and broadcast as a binary frame', T, async t => {
  const a = await openSocket(t)
  const b = await openSocket(t)
  const topic = uniqueTopic()
  const aChan = await join(a, topic)
  const bChan = await join(b, topic)
  const bytes = Uint8Array.from([0, 1, 2, 0xfe, 0xff, ...Buffer.from(nonce())])
  const got = [aChan, bChan].map((c, i) => waitFor(cb => c.on('blob', cb), `blob at member ${i}`))

  const reply = await replyOf(aChan.push('blob', bytes.buffer.slice(0)), 'reply to binary push')
  assert.deepEqual(reply, { status: 'ok', response: {} })
  for (const payload of await Promise.all(got)) {
    assert.ok(payload instanceof ArrayBuffer, 'binary broadcast decodes to an ArrayBuffer')
    assert.deepEqual(new Uint8Array(payload), bytes)
  }
})

test('a join and a push made before the socket opens are sent once it does', T, async t => {
  const socket = newSocket(t)
  const topic = uniqueTopic()
  const channel = socket.channel(topic)
  const joined = replyOf(channel.join(), 'buffered join reply')
  const id = nonce()
  const got = nextEvent(channel, 'new_msg', id)
  const pushed = replyOf(channel.push('new_msg', { id }), 'buffered push reply')
  await connect(socket)
  assert.deepEqual(await joined, { status: 'ok', response: {} })
  assert.deepEqual(await pushed, { status: 'ok', response: {} })
  assert.deepEqual(await got, { id })
})

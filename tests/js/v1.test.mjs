// The genuine V1 client (npm phoenix 1.2.1: JSON objects, no join_ref) alone and mixed with the
// V2 client (phoenix.js 1.8: JSON arrays) in one topic.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  admin, join, nextEvent, nonce, openSocket, openV1Socket, recorder, replyOf, sleep, uniqueTopic
} from './helpers.mjs'

const T = { timeout: 15_000 }

test('V1 client: join rooms:lobby, push, both members get the broadcast', T, async t => {
  const alice = await openV1Socket(t)
  const bob = await openV1Socket(t)
  const aliceLobby = await join(alice, 'rooms:lobby', { user: 'alice' })
  const bobLobby = await join(bob, 'rooms:lobby', { user: 'bob' })
  const frames = recorder()
  alice.onMessage(frames.record)

  const id = nonce()
  const atAlice = nextEvent(aliceLobby, 'new_msg', id)
  const atBob = nextEvent(bobLobby, 'new_msg', id)
  const push = aliceLobby.push('new_msg', { id, body: 'v1' })
  assert.deepEqual(await replyOf(push), { status: 'ok', response: {} })
  assert.deepEqual(await atAlice, { id, body: 'v1' })
  assert.deepEqual(await atBob, { id, body: 'v1' })

  // V1 frames are objects without join_ref; a broadcast carries ref null.
  assert.deepEqual(frames.items.find(m => m.event === 'new_msg'),
    { topic: 'rooms:lobby', event: 'new_msg', payload: { id, body: 'v1' }, ref: null })
  assert.deepEqual(frames.items.find(m => m.event === 'phx_reply' && m.ref === push.ref),
    { topic: 'rooms:lobby', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: push.ref })
})

test('V1 client: heartbeats are answered', T, async t => {
  const socket = await openV1Socket(t, { heartbeatIntervalMs: 300 })
  const closes = recorder()
  socket.onClose(closes.record)
  const sent = []
  const replies = []
  const originalPush = socket.push.bind(socket)
  socket.push = data => {
    if (data.topic === 'phoenix') sent.push(data.ref)
    return originalPush(data)
  }
  socket.onMessage(msg => { if (msg.topic === 'phoenix') replies.push(msg) })

  await sleep(2000)
  assert.ok(sent.length >= 4, `only ${sent.length} heartbeats sent`)
  assert.ok(replies.length >= sent.length - 1, `${sent.length} heartbeats, ${replies.length} replies`)
  for (const [i, reply] of replies.entries()) {
    assert.deepEqual(reply,
      { topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: sent[i] })
  }
  assert.deepEqual(closes.items, [])
  assert.ok(socket.isConnected())
})

test('V1 and V2 clients in one topic both receive pushes from either, and admin broadcasts', T, async t => {
  const v1 = await openV1Socket(t)
  const v2 = await openSocket(t)
  const topic = uniqueTopic()
  const v1Chan = await join(v1, topic)
  const v2Chan = await join(v2, topic)

  const fromV1 = nonce()
  let got = [nextEvent(v1Chan, 'msg', fromV1), nextEvent(v2Chan, 'msg', fromV1)]
  assert.equal((await replyOf(v1Chan.push('msg', { id: fromV1, by: 'v1' }))).status, 'ok')
  assert.deepEqual(await Promise.all(got), [{ id: fromV1, by: 'v1' }, { id: fromV1, by: 'v1' }])

  const fromV2 = nonce()
  got = [nextEvent(v1Chan, 'msg', fromV2), nextEvent(v2Chan, 'msg', fromV2)]
  assert.equal((await replyOf(v2Chan.push('msg', { id: fromV2, by: 'v2' }))).status, 'ok')
  assert.deepEqual(await Promise.all(got), [{ id: fromV2, by: 'v2' }, { id: fromV2, by: 'v2' }])

  const fromAdmin = nonce()
  got = [nextEvent(v1Chan, 'msg', fromAdmin), nextEvent(v2Chan, 'msg', fromAdmin)]
  const res = await admin('/api/broadcast', {
    method: 'POST', body: { topic, event: 'msg', payload: { id: fromAdmin } }
  })
  assert.deepEqual(res.json, { broadcasts: 1, subscribers: 2 })
  await Promise.all(got)
})

// Topic routes and limits from ringgate.toml, seen through phoenix.js 1.8: a topic without a
// route cannot be joined, `news:*` is receive-only (client pushes refused, server broadcasts
// delivered), and a connection holds at most max_channels_per_connection channels.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  MAX_CHANNELS, admin, join, leave, nextEvent, nonce, openSocket, recorder, replyOf, sleep, uniqueTopic
} from './helpers.mjs'

const T = { timeout: 15_000 }

test('joining a topic without a route fails with "unmatched topic"', T, async t => {
  const socket = await openSocket(t)
  const frames = recorder()
  socket.onMessage(frames.record)
  const topic = uniqueTopic('nope:')
  const channel = socket.channel(topic)

  const reply = await replyOf(channel.join(), `join ${topic}`)
  assert.deepEqual(reply, { status: 'error', response: { reason: 'unmatched topic' } })
  assert.equal(channel.state, 'errored')
  const wire = frames.items.find(m => m.topic === topic)
  assert.equal(wire.join_ref, null, 'a refused join is answered with join_ref null')
  assert.equal(wire.event, 'phx_reply')
  assert.ok(socket.isConnected(), 'a refused join leaves the socket open')
})

test('a push on news:* is rejected with "push not allowed" and broadcast to nobody', T, async t => {
  const writer = await openSocket(t)
  const reader = await openSocket(t)
  const topic = uniqueTopic('news:')
  const wChan = await join(writer, topic)
  const rChan = await join(reader, topic)
  const seen = recorder()
  wChan.on('headline', seen.record)
  rChan.on('headline', seen.record)

  const reply = await replyOf(wChan.push('headline', { id: nonce() }), 'reply to push on news')
  assert.deepEqual(reply, { status: 'error', response: { reason: 'push not allowed' } })
  await sleep(300)
  assert.deepEqual(seen.items, [], 'a rejected push must not be broadcast')
  assert.equal(wChan.state, 'joined', 'a rejected push does not end the channel')
})

test('news:* still receives broadcasts published through the admin API', T, async t => {
  const reader = await openSocket(t)
  const topic = uniqueTopic('news:')
  const channel = await join(reader, topic)
  const id = nonce()
  const got = nextEvent(channel, 'headline', id)
  const res = await admin('/api/broadcast', {
    method: 'POST', body: { topic, event: 'headline', payload: { id } }
  })
  assert.equal(res.status, 202, res.text)
  assert.deepEqual(await got, { id })
})

test('one channel past max_channels_per_connection is refused with "too many channels joined"', T, async t => {
  const socket = await openSocket(t)
  const prefix = uniqueTopic()
  const replies = await Promise.all(Array.from({ length: MAX_CHANNELS }, (_, i) =>
    replyOf(socket.channel(`${prefix}:${i}`).join(), `join ${i}`)))
  assert.ok(replies.every(r => r.status === 'ok'), JSON.stringify(replies.filter(r => r.status !== 'ok')))

  const extra = socket.channel(`${prefix}:${MAX_CHANNELS}`)
  assert.deepEqual(await replyOf(extra.join(), `join ${MAX_CHANNELS + 1}`),
    { status: 'error', response: { reason: 'too many channels joined' } })
  // Stops the client's rejoin of the refused channel (it would retry after 1 s); the server
  // answers a leave of a topic not joined with ok.
  await leave(socket, extra)

  // Leaving one makes room again.
  const first = socket.channels.find(c => c.topic === `${prefix}:0`)
  await leave(socket, first)
  await join(socket, `${prefix}:again`)
})

// Heartbeats and ping through phoenix.js 1.8. The client sends the next heartbeat only after the
// reply to the last one, and closes the connection ("heartbeat timeout") when a reply takes
// longer than the interval, so a short interval makes a missing reply visible quickly.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { join, openSocket, recorder, uniqueTopic, waitFor, withTimeout } from './helpers.mjs'

const T = { timeout: 15_000 }
const HEARTBEAT_MS = 300
// Heartbeats answered before the checks: each cycle needs the reply to the one before it.
const ROUNDS = 6

// The refs of the heartbeats `socket` pushes (its own and pings') and the gateway's messages on
// the `phoenix` topic (their replies), in order.
function recordHeartbeats (socket) {
  const sent = []
  const replies = []
  const originalPush = socket.push.bind(socket)
  socket.push = (data, chan) => {
    if (data.topic === 'phoenix' && data.event === 'heartbeat') sent.push(data.ref)
    return originalPush(data, chan)
  }
  socket.onMessage(msg => { if (msg.topic === 'phoenix') replies.push(msg) })
  return { sent, replies }
}

test('heartbeats every 300 ms are all answered and the socket stays open', T, async t => {
  const socket = await openSocket(t, { heartbeatIntervalMs: HEARTBEAT_MS })
  const channel = await join(socket, uniqueTopic())
  const closes = recorder()
  const errors = recorder()
  socket.onClose(closes.record)
  socket.onError(errors.record)
  const channelErrors = recorder()
  channel.onError(channelErrors.record)

  const { sent, replies } = recordHeartbeats(socket)

  // The client sends the next heartbeat only once the last is answered, so ROUNDS replies prove
  // the replies keep the cycle going (counted, not timed: a test never asserts a timing).
  await waitFor(cb => socket.onMessage(cb), `${ROUNDS} heartbeat replies`, {
    accept: () => replies.length >= ROUNDS,
    ms: ROUNDS * HEARTBEAT_MS + 8000
  })
  assert.ok(sent.length >= replies.length, `${sent.length} heartbeats, ${replies.length} replies`)
  for (const [i, reply] of replies.entries()) {
    assert.deepEqual(reply, {
      join_ref: null,
      ref: sent[i],
      topic: 'phoenix',
      event: 'phx_reply',
      payload: { status: 'ok', response: {} }
    })
  }
  assert.deepEqual(closes.items, [], 'no close (a missed reply closes with "heartbeat timeout")')
  assert.deepEqual(errors.items, [])
  assert.deepEqual(channelErrors.items, [])
  assert.ok(socket.isConnected())
  assert.equal(channel.state, 'joined')
})

test('socket.ping is answered by the gateway, one heartbeat reply per ping', T, async t => {
  const socket = await openSocket(t)
  const { sent, replies } = recordHeartbeats(socket)
  const rtts = []
  for (let i = 0; i < 3; i++) {
    const rtt = await withTimeout(new Promise(resolve => {
      assert.equal(socket.ping(resolve), true, 'ping pushed on an open socket')
    }), `ping ${i} reply`)
    rtts.push(rtt)
  }
  // phoenix.js times a ping from its heartbeat push to the reply carrying the same ref: each
  // round trip must be the gateway's reply to that ping's own heartbeat (counted, not timed).
  assert.equal(sent.length, 3, `heartbeats pushed: ${sent}`)
  assert.deepEqual(replies.map(r => r.ref), sent)
  for (const reply of replies) {
    assert.deepEqual(reply.payload, { status: 'ok', response: {} })
  }
  for (const rtt of rtts) {
    assert.ok(Number.isFinite(rtt) && rtt >= 0, `rtt ${rtt}`)
  }
})

// phoenix.js 1.8's `authToken` option: the token travels as a second WebSocket subprotocol,
// `base64url.bearer.phx.<base64 without padding>`, next to `phoenix`; the server must pick
// `phoenix` (ws fails the handshake if the server picks none of the offered ones).

import assert from 'node:assert/strict'
import { test } from 'node:test'

import WebSocket from 'ws'

import {
  join, nextEvent, nonce, openRaw, openSocket, replyOf, uniqueTopic
} from './helpers.mjs'

const T = { timeout: 15_000 }

/** A ws transport that records the subprotocols phoenix.js offers. */
function recordingTransport () {
  const offered = []
  class RecordingWebSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols)
      offered.push(protocols)
    }
  }
  return { RecordingWebSocket, offered }
}

// Tokens whose base64 needs 0, 1 and 2 padding characters, and one with '+'. (A base64 '/' is
// not a token character: ws, like browsers, refuses to offer such a subprotocol at all.)
for (const token of ['abc', 'abcd', 'user-42:secret', '\u00fb\u00ef']) {
  test(`a socket with authToken ${JSON.stringify(token)} connects, is answered "phoenix" and joins`, T, async t => {
    const { RecordingWebSocket, offered } = recordingTransport()
    const socket = await openSocket(t, { transport: RecordingWebSocket, authToken: token })
    const b64 = Buffer.from(token, 'latin1').toString('base64').replace(/=/g, '')
    assert.deepEqual(offered, [['phoenix', `base64url.bearer.phx.${b64}`]])
    assert.equal(socket.conn.protocol, 'phoenix')

    const topic = uniqueTopic()
    const channel = await join(socket, topic)
    const id = nonce()
    const got = nextEvent(channel, 'new_msg', id)
    assert.equal((await replyOf(channel.push('new_msg', { id }))).status, 'ok')
    await got
  })
}

test('offering only "phoenix" is answered "phoenix"; offering nothing gets no subprotocol', T, async t => {
  const withProtocol = await openRaw(t, '?vsn=2.0.0', ['phoenix'])
  assert.equal(withProtocol.ws.protocol, 'phoenix')
  const without = await openRaw(t, '?vsn=2.0.0')
  assert.equal(without.ws.protocol, '')
})

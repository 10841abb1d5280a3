// Graceful drain as the official client sees it: instance A is drained with SIGTERM while
// instance B listens on the same port (SO_REUSEPORT). The phoenix.js socket on A gets close 1012,
// reconnects by itself, lands on B (A's listener is gone), rejoins its channel, and receives a
// broadcast published through B. A exits by itself with status 0.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { Socket } from 'phoenix'
import WebSocket from 'ws'

import { freePort, spawnGateway } from '../support/gateway.mjs'
import { withTimeout } from './helpers.mjs'

function startGateway (port, adminPort) {
  return spawnGateway({
    port,
    adminPort,
    args: ['--workers', '1', '--drain-ms', '1000', '--timer-tick-ms', '100', '--log-level', 'warn']
  })
}

test('SIGTERM drain: close 1012, phoenix.js reconnects to the second instance', async () => {
  const port = await freePort()
  const a = await startGateway(port, await freePort())
  const socket = new Socket(`ws://127.0.0.1:${port}/socket`, {
    transport: WebSocket,
    reconnectAfterMs: () => 200,
    rejoinAfterMs: () => 200,
    timeout: 3000
  })
  const closes = []
  socket.onClose(event => closes.push(event.code))
  let b
  try {
    socket.connect()
    const channel = socket.channel('rooms:drain', {})
    let joins = 0
    const joined = () => new Promise(resolve => channel.join().receive('ok', () => { joins++; resolve() }))
    await withTimeout(joined(), 'the first join')
    assert.equal(socket.transport, WebSocket, 'phoenix.js must use websocket, not longpoll')

    b = await startGateway(port, await freePort())
    const rejoined = new Promise(resolve => {
      const timer = setInterval(() => { if (joins >= 2 || channel.state === 'joined' && closes.length) { clearInterval(timer); resolve() } }, 50)
    })
    a.kill('SIGTERM')
    assert.equal(await withTimeout(a.exited, 'instance A to exit after draining', 10000), 0)
    assert.ok(closes.includes(1012), `close codes seen: ${closes}`)
    await withTimeout(rejoined, 'the channel to rejoin on instance B', 10000)
    await withTimeout(new Promise(resolve => {
      const t = setInterval(() => { if (channel.state === 'joined') { clearInterval(t); resolve() } }, 50)
    }), 'the channel to be joined again', 10000)

    const got = new Promise(resolve => channel.on('after_drain', resolve))
    // Retry the publish until B reports the rejoined subscriber (the rejoin may land a moment later).
    for (let i = 0; i < 50; i++) {
      const r = await fetch(`${b.admin}/api/broadcast`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ topic: 'rooms:drain', event: 'after_drain', payload: { from: 'B' } })
      })
      assert.equal(r.status, 202)
      if ((await r.json()).subscribers === 1) break
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    assert.deepEqual(await withTimeout(got, 'the broadcast from instance B'), { from: 'B' })
  } finally {
    socket.disconnect()
    a.kill('SIGKILL')
    b?.kill('SIGKILL')
  }
})

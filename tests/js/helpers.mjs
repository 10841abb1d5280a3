// Shared helpers for the Node suite: where the gateway is, how to open the official clients
// against it, and bounded waits. Every wait rejects with a message naming what was awaited, so
// a missing frame fails a test in seconds instead of hanging the run.
//
// Environment (set by scripts/test.sh): RINGGATE_PORT (public port) and RINGGATE_ADMIN
// (admin API base URL). The admin key is read from ringgate.toml, the config the gateway runs
// with, so it is written down once.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'

import { Socket } from 'phoenix'
import PhoenixV1 from 'phoenix-v1'
import WebSocket from 'ws'

function requireEnv (name) {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run through scripts/test.sh or export it`)
  return value
}

const PORT = Number(requireEnv('RINGGATE_PORT'))
const ADMIN = requireEnv('RINGGATE_ADMIN')
/** Socket endpoint as an app configures it; phoenix.js appends `/websocket`. */
const SOCKET_URL = `ws://127.0.0.1:${PORT}/socket`
/** The websocket path itself, for raw `ws` clients. */
export const WS_URL = `${SOCKET_URL}/websocket`

const toml = readFileSync(new URL('./ringgate.toml', import.meta.url), 'utf8')
export const ADMIN_KEY = /^api_key\s*=\s*"([^"]*)"/m.exec(toml)?.[1] ?? null
/** Channels one connection may join: ringgate.toml's value, else the default (Phoenix's 100). */
export const MAX_CHANNELS = Number(/^max_channels_per_connection\s*=\s*(\d+)/m.exec(toml)?.[1] ?? 100)

/** Longest any single awaited event may take on loopback, even on a loaded CI box. */
export const WAIT_MS = 3000
/** Client push/join timeout: shorter than phoenix.js's 10 s so a lost reply fails fast. */
const PUSH_TIMEOUT_MS = 3000

/** A topic no other test (or concurrently running test file) uses. */
export function uniqueTopic (prefix = 'rooms:') {
  return `${prefix}${randomBytes(6).toString('hex')}`
}

export function nonce () {
  return randomBytes(8).toString('hex')
}

/** `promise`, or a rejection naming `what` after `ms`. */
export function withTimeout (promise, what, ms = WAIT_MS) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/**
 * Resolves with the first value `subscribe(deliver)` hands to `deliver` for which `accept` is
 * true; rejects after `ms`. `subscribe` registers a callback (e.g. `cb => chan.on('ev', cb)`);
 * only its first argument (the payload, for channel callbacks) counts.
 */
export function waitFor (subscribe, what, { accept = () => true, ms = WAIT_MS } = {}) {
  let done = false
  const seen = new Promise(resolve => {
    subscribe(value => {
      if (done || !accept(value)) return
      done = true
      resolve(value)
    })
  })
  return withTimeout(seen, what, ms).finally(() => { done = true })
}

/** Resolves after `ms` (for "nothing happens meanwhile" checks). */
export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

/** Collects the first argument of every call of the returned `record` callback. */
export function recorder () {
  const items = []
  const record = value => { items.push(value) }
  return { items, record }
}

/**
 * An official phoenix.js (1.8) socket over `ws`, not yet connected; it is disconnected when
 * test `t` ends. Channels joined before `connect` are buffered by the client.
 */
export function newSocket (t, opts = {}) {
  const socket = new Socket(SOCKET_URL, {
    transport: WebSocket,
    timeout: PUSH_TIMEOUT_MS,
    // Unexpected closes show up as test failures, not as quiet reconnects.
    reconnectAfterMs: () => 60_000,
    ...opts
  })
  t.after(() => disconnect(socket))
  return socket
}

/**
 * Connects `socket` and waits for the open. Asserts the connection really is a WebSocket:
 * without a transport phoenix.js silently falls back to long-polling.
 */
export async function connect (socket) {
  const opened = waitFor(cb => socket.onOpen(cb), 'socket open')
  const failed = new Promise((_resolve, reject) => {
    socket.onError(err => reject(new Error(`socket error before open: ${err?.message ?? err}`)))
  })
  opened.catch(() => {}) // settled by the race below, or moot when connect throws
  socket.connect()
  await Promise.race([opened, failed])
  assert.ok(socket.transport === WebSocket || socket.transport.prototype instanceof WebSocket,
    'phoenix.js must use the ws transport')
  assert.ok(socket.conn instanceof WebSocket, 'connection must be a ws WebSocket, not LongPoll')
  assert.equal(socket.conn.readyState, WebSocket.OPEN)
  assert.ok(socket.conn.url.startsWith(`${WS_URL}?`), `url ${socket.conn.url}`)
  assert.ok(socket.conn.url.endsWith('vsn=2.0.0'), `url ${socket.conn.url}`)
  return socket
}

/** `newSocket` + `connect`: an open phoenix.js 1.8 socket, closed when `t` ends. */
export function openSocket (t, opts = {}) {
  return connect(newSocket(t, opts))
}

/** Disconnects a phoenix.js 1.8 socket and waits (bounded) until its connection is closed. */
function disconnect (socket) {
  for (const channel of socket.channels) channel.rejoinTimer.reset()
  return withTimeout(new Promise(resolve => socket.disconnect(resolve)), 'socket disconnect')
}

/**
 * Opens the genuine V1 client (phoenix 1.2.1, JSON objects on the wire). It knows no
 * `onOpen` refs or ping; its heartbeat is a `setInterval` that `disconnect` does not stop, so
 * cleanup clears it or the test process would never exit.
 */
export async function openV1Socket (t, opts = {}) {
  const socket = new PhoenixV1.Socket(SOCKET_URL, {
    transport: WebSocket,
    timeout: PUSH_TIMEOUT_MS,
    reconnectAfterMs: () => 60_000,
    ...opts
  })
  t.after(() => {
    for (const channel of socket.channels) channel.rejoinTimer.reset()
    socket.reconnectTimer.reset()
    socket.disconnect()
    clearInterval(socket.heartbeatTimer)
  })
  const opened = waitFor(cb => socket.onOpen(cb), 'V1 socket open')
  opened.catch(() => {}) // settled by the race below, or moot when connect throws
  const failed = new Promise((_resolve, reject) => {
    socket.onError(err => reject(new Error(`V1 socket error before open: ${err?.message ?? err}`)))
  })
  socket.connect()
  await Promise.race([opened, failed])
  assert.ok(socket.conn instanceof WebSocket, 'V1 connection must be a ws WebSocket')
  assert.ok(socket.conn.url.endsWith('vsn=1.0.0'), `url ${socket.conn.url}`)
  return socket
}

/**
 * Settles with `{status, response}` of a phoenix.js push (join, leave or event), on whichever
 * of ok, error or timeout comes first. Works for both client versions.
 */
export function replyOf (push, what = 'push reply', ms = WAIT_MS) {
  const settled = new Promise(resolve => {
    for (const status of ['ok', 'error', 'timeout']) {
      push.receive(status, response => resolve({ status, response }))
    }
  })
  return withTimeout(settled, what, ms)
}

/** Joins `topic` on `socket` and asserts the join is accepted. Returns the channel. */
export async function join (socket, topic, params = {}) {
  const channel = socket.channel(topic, params)
  const reply = await replyOf(channel.join(), `join ${topic}`)
  assert.deepEqual(reply, { status: 'ok', response: {} }, `join ${topic}`)
  return channel
}

/**
 * Leaves `channel` and resolves once the server has answered: phoenix.js reports a leave ok
 * locally at once, before the phx_leave has even reached the server.
 */
export async function leave (socket, channel) {
  const push = channel.leave()
  const reply = await waitFor(cb => socket.onMessage(cb), `server reply to leave ${channel.topic}`, {
    accept: m => m.topic === channel.topic && m.event === 'phx_reply' && m.ref === push.ref
  })
  assert.deepEqual(reply.payload, { status: 'ok', response: {} })
}

/** Next `event` on `channel` whose payload has `payload.id === id` (other tests share topics). */
export function nextEvent (channel, event, id, ms = WAIT_MS) {
  return waitFor(cb => channel.on(event, cb), `${event} ${id} on ${channel.topic}`, {
    accept: payload => payload?.id === id,
    ms
  })
}

/** A request to the admin API; `auth: false` leaves the bearer token out. */
export async function admin (path, { method = 'GET', body, auth = true, headers = {} } = {}) {
  const res = await fetch(`${ADMIN}${path}`, {
    method,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(auth && ADMIN_KEY ? { authorization: `Bearer ${ADMIN_KEY}` } : {}),
      ...headers
    },
    body: typeof body === 'string' || body === undefined ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS)
  })
  const text = await res.text()
  let json
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.status, json, text }
}

/** Subscriber count of `topic` according to the admin API. */
export async function subscribers (topic) {
  const { status, json } = await admin(`/api/topics/${encodeURIComponent(topic)}`)
  assert.equal(status, 200)
  assert.equal(json.topic, topic)
  return json.subscribers
}

/**
 * A raw `ws` client on the Phoenix path (`query` e.g. '' or '?vsn=2.0.0'), closed when `t`
 * ends. `next(what, accept)` resolves with the next text frame (parsed) that `accept`s, frames
 * already received included; the frames it passes over stay in `frames` for inspection.
 */
export async function openRaw (t, query = '', protocols = undefined) {
  const ws = new WebSocket(`${WS_URL}${query}`, protocols)
  t.after(() => ws.terminate())
  const frames = []
  const waiters = new Set()
  let cursor = 0 // frames before it were consumed or passed over by `next`
  ws.on('message', (data, isBinary) => {
    frames.push({ text: data.toString(), isBinary })
    for (const w of [...waiters]) w()
  })
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve)
    ws.once('error', reject)
  }), `raw websocket open ${query}`)
  const take = accept => {
    for (; cursor < frames.length; cursor++) {
      const f = frames[cursor]
      if (f.isBinary) continue
      const msg = JSON.parse(f.text)
      if (accept(msg)) {
        cursor++
        return { msg }
      }
    }
    return null
  }
  const next = (what, accept = () => true, ms = WAIT_MS) => {
    let waiter
    const found = new Promise(resolve => {
      waiter = () => {
        const hit = take(accept)
        if (!hit) return
        waiters.delete(waiter) // now, not in `finally`: a frame in the same tick is the next one's
        resolve(hit.msg)
      }
      waiters.add(waiter)
      waiter()
    })
    return withTimeout(found, what, ms).finally(() => waiters.delete(waiter))
  }
  const send = msg => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg))
  return { ws, frames, next, send }
}

// Presence as the official client sees it: phoenix.js's own, unmodified `Presence` class against
// a gateway this file starts with presence routes (its own config, its own ports). Covers the
// join → presence_state → presence_diff sequence, several connections under one key, a meta
// update, a leave, a killed connection, the member limit, the admin view, claim-keyed members,
// and a storm of 5,000 joins whose diffs are merged by the batching.

import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join as pathJoin } from 'node:path'
import { after, before, test } from 'node:test'

import { Presence, Socket } from 'phoenix'
import WebSocket from 'ws'

import { spawnGateway } from '../support/gateway.mjs'
import { replyOf, withTimeout } from './helpers.mjs'

/** Batch period of the gateway under test: long enough that a storm is clearly merged. */
const BATCH_MS = 100
const STORM = 5000
/**
 * Every member of a room is sent the room once per storm (its state, then the diffs after it:
 * ~110 B per entry, ~0.6 MB for 5,000), and the storm's 5,000 clients are all read by this one
 * process, so some are not read for a while. The gateway's default send queue (256 KiB) would
 * rightly close those as slow consumers (1008), and their entries would leave; the bound here is
 * what a deployment with rooms this large configures (docs/configuration.md, `[presence]`).
 */
const SEND_QUEUE_BYTES = 4 << 20
/** The storm room's limit: the storm and its watcher fit, one more does not. */
const MAX_MEMBERS = STORM + 1
const SECRET = 'presence-suite-secret'

const CONFIG = `
[presence]
batch_ms = ${BATCH_MS}
max_members = ${MAX_MEMBERS}
max_meta_bytes = 200
update_event = "presence_update"

[auth]
secret = "${SECRET}"

[[channels]]
pattern = "room:*"
on_push = "broadcast"
presence = true
presence_key = "param:user"
presence_meta = ["param:status", "claim:name"]

[[channels]]
pattern = "conn:*"
on_push = "reject"
presence = true

[[channels]]
pattern = "staff:*"
on_push = "reject"
presence = true
presence_key = "claim:sub"
presence_meta = ["claim:name"]
`

/** An HS256 JWT, signed here as the application's auth service would. */
function token (claims) {
  const b64 = obj => Buffer.from(JSON.stringify(obj)).toString('base64url')
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`
}

let gw
let socketUrl
let admin

before(async () => {
  const dir = mkdtempSync(pathJoin(tmpdir(), 'ringgate-presence-'))
  const config = pathJoin(dir, 'ringgate.toml')
  writeFileSync(config, CONFIG)
  gw = await spawnGateway({
    args: ['--config', config, '--workers', '2', '--log-level', 'warn',
      '--max-messages-per-second', '1000', '--max-send-queue-bytes', String(SEND_QUEUE_BYTES)]
  })
  socketUrl = `ws://127.0.0.1:${gw.port}/socket`
  admin = gw.admin
})

after(() => { gw?.kill('SIGKILL') })

const sockets = []
after(() => {
  for (const s of sockets) {
    for (const c of s.channels) c.rejoinTimer.reset()
    s.disconnect()
  }
})

async function openSocket (claims = { sub: 'anon', name: 'Anon' }) {
  const socket = new Socket(socketUrl, {
    transport: WebSocket,
    timeout: 3000,
    reconnectAfterMs: () => 60_000,
    rejoinAfterMs: () => 60_000,
    params: { token: token(claims) }
  })
  sockets.push(socket)
  const opened = new Promise((resolve, reject) => {
    socket.onOpen(resolve)
    socket.onError(reject)
  })
  socket.connect()
  await withTimeout(opened, 'socket open')
  return socket
}

/** A channel with the official Presence on it, recording every callback. */
function tracked (socket, topic, params) {
  const channel = socket.channel(topic, params)
  const presence = new Presence(channel)
  const log = { joins: [], leaves: [], syncs: 0 }
  presence.onJoin((key, current, joined) => log.joins.push({ key, current, joined }))
  presence.onLeave((key, current, left) => log.leaves.push({ key, current, left }))
  const waiters = new Set()
  presence.onSync(() => {
    log.syncs++
    for (const w of [...waiters]) w()
  })
  /** Resolves once `accept(presence)` holds after a sync (or already holds). */
  const until = (what, accept, ms = 5000) => withTimeout(new Promise(resolve => {
    const check = () => {
      if (log.syncs > 0 && accept(presence)) {
        waiters.delete(check)
        resolve(presence)
      }
    }
    waiters.add(check)
    check()
  }), what, ms)
  return { channel, presence, log, until }
}

/** Connections the gateway closed as slow consumers, from its /metrics. */
async function overflows () {
  const m = await (await fetch(`${admin}/metrics`)).text()
  return [...m.matchAll(/^ringgate_\S*send_queue_overflows_total\S* (\d+)$/mg)].reduce((a, x) => a + Number(x[1]), 0)
}

/** The presence section of `/api/stats` and the two gauges of `/metrics`. */
async function presenceStats () {
  const stats = await (await fetch(`${admin}/api/stats`)).json()
  const m = await (await fetch(`${admin}/metrics`)).text()
  const gauge = name => Number(m.match(new RegExp(`^ringgate_${name} (\\d+)$`, 'm'))?.[1])
  return { stats: stats.presence, topics: gauge('presence_topics'), entries: gauge('presence_entries') }
}

const keysOf = presence => presence.list((key, p) => key).sort()
const metasOf = (presence, key) => presence.list((k, p) => k === key ? p.metas : null).filter(Boolean)[0] ?? []

async function joinTracked (socket, topic, params) {
  const t = tracked(socket, topic, params)
  const reply = await replyOf(t.channel.join(), `join ${topic}`)
  assert.deepEqual(reply, { status: 'ok', response: {} })
  return t
}

test('three clients: joins, a meta update, a leave and a killed connection', async () => {
  const topic = `room:${Date.now()}`
  const [sa, sb, sc] = await Promise.all([
    openSocket({ sub: 'a', name: 'Ann' }), openSocket({ sub: 'b', name: 'Bob' }), openSocket({ sub: 'c', name: 'Cy' })
  ])
  const a = await joinTracked(sa, topic, { user: 'a', status: 'online', secret: 'x' })
  await a.until('a sees itself', p => keysOf(p).join() === 'a')
  const b = await joinTracked(sb, topic, { user: 'b', status: 'online' })
  const c = await joinTracked(sc, topic, { user: 'c', status: 'busy' })
  for (const [name, t] of Object.entries({ a, b, c })) {
    await t.until(`${name} lists a, b, c`, p => keysOf(p).join() === 'a,b,c')
  }
  // Metas carry phx_ref, online_at and the allowlisted fields only (the name from the token).
  const [am] = metasOf(c.presence, 'a')
  assert.deepEqual(Object.keys(am).sort(), ['name', 'online_at', 'phx_ref', 'status'])
  assert.equal(am.status, 'online')
  assert.equal(am.name, 'Ann')
  assert.match(am.online_at, /^\d{10}$/)
  assert.equal(am.phx_ref.length, 16)
  assert.deepEqual(a.log.joins.map(j => j.key).filter(k => k !== 'a').sort(), ['b', 'c'])
  assert.deepEqual(c.log.leaves, [])

  // A meta update: b is away. Every client sees the new meta, phx_ref_prev naming the old one;
  // a param field is replaced, a claim field cannot be.
  const [bOld] = metasOf(a.presence, 'b')
  const upd = await replyOf(b.channel.push('presence_update', { status: 'away', name: 'Mallory' }), 'update')
  assert.deepEqual(upd, { status: 'ok', response: {} })
  for (const [name, t] of Object.entries({ a, b, c })) {
    await t.until(`${name} sees b away`, p => metasOf(p, 'b')[0]?.status === 'away')
    const metas = metasOf(t.presence, 'b')
    assert.equal(metas.length, 1)
    assert.equal(metas[0].phx_ref_prev, bOld.phx_ref)
    assert.notEqual(metas[0].phx_ref, bOld.phx_ref)
    assert.equal(metas[0].name, 'Bob')
  }

  // c leaves: a and b see it go.
  await replyOf(c.channel.leave(), 'c leave')
  for (const [name, t] of Object.entries({ a, b })) {
    await t.until(`${name} lists a, b`, p => keysOf(p).join() === 'a,b')
    assert.ok(t.log.leaves.some(l => l.key === 'c' && l.current.metas.length === 0), `${name} onLeave c`)
  }

  // b's connection dies without a close frame: a sees b leave.
  sb.conn.terminate()
  await a.until('a alone', p => keysOf(p).join() === 'a')
  assert.ok(a.log.leaves.some(l => l.key === 'b'))
  const view = await (await fetch(`${admin}/api/presence/${encodeURIComponent(topic)}`)).json()
  assert.deepEqual(Object.keys(view), ['a'])
  assert.deepEqual(view.a.metas, metasOf(a.presence, 'a'))
})

test('two connections with one key are one member with two metas', async () => {
  const topic = `room:dup${Date.now()}`
  const [s1, s2, sw] = await Promise.all([openSocket(), openSocket(), openSocket()])
  const w = await joinTracked(sw, topic, { user: 'watcher' })
  const one = await joinTracked(s1, topic, { user: 'same', status: 'phone' })
  const two = await joinTracked(s2, topic, { user: 'same', status: 'laptop' })
  for (const t of [w, one, two]) {
    await t.until('same has two metas', p => metasOf(p, 'same').length === 2)
    assert.deepEqual(keysOf(t.presence), ['same', 'watcher'])
    assert.deepEqual(metasOf(t.presence, 'same').map(m => m.status).sort(), ['laptop', 'phone'])
  }
  await replyOf(one.channel.leave(), 'leave one')
  await w.until('same has one meta', p => metasOf(p, 'same').length === 1)
  assert.equal(metasOf(w.presence, 'same')[0].status, 'laptop')
  assert.deepEqual(keysOf(w.presence), ['same', 'watcher'])
})

test('conn keys, claim keys, and refused joins', async () => {
  const s = await openSocket({ sub: 'u-42', name: 'Dee' })
  const t = await joinTracked(s, `conn:${Date.now()}`, {})
  await t.until('one member', p => keysOf(p).length === 1)
  const [key] = keysOf(t.presence)
  assert.equal(metasOf(t.presence, key)[0].phx_ref, key, 'a conn key is the entry phx_ref')

  const staff = await joinTracked(s, `staff:${Date.now()}`, { sub: 'forged' })
  await staff.until('claim-keyed member', p => keysOf(p).join() === 'u-42')
  assert.equal(metasOf(staff.presence, 'u-42')[0].name, 'Dee')

  const noKey = await replyOf(s.channel(`room:nokey${Date.now()}`, { status: 'x' }).join(), 'join without key')
  assert.deepEqual(noKey, { status: 'error', response: { reason: 'presence key missing' } })
  const big = await replyOf(s.channel(`room:big${Date.now()}`, { user: 'u', status: 'x'.repeat(300) }).join(), 'big meta')
  assert.deepEqual(big, { status: 'error', response: { reason: 'presence meta too large' } })
  // An update where the route allowlists no param field changes nothing but the phx_ref.
  const upd = await replyOf(t.channel.push('presence_update', { status: 'x' }), 'update on conn topic')
  assert.deepEqual(upd, { status: 'ok', response: {} })
})

test(`a storm of ${STORM} joins: few merged diffs, an exact final list, then the limit`, async (t) => {
  const topic = `room:storm${Date.now()}`
  const ws = await openSocket()
  const watch = await joinTracked(ws, topic, { user: 'watcher' })
  await watch.until('watcher alone', p => keysOf(p).join() === 'watcher')
  const diffs = []
  watch.channel.on('presence_diff', () => diffs.push(Date.now()))
  // What the operator sees before the storm: the earlier tests' rooms, and the watcher's.
  const before = await presenceStats()
  assert.ok(before.stats.entries >= 1 && before.stats.topics >= 1, JSON.stringify(before))
  assert.equal(before.entries, before.stats.entries)
  assert.equal(before.topics, before.stats.topics)

  // Raw clients: open them all first, then join all within a fraction of a second.
  const url = `${socketUrl}/websocket?vsn=2.0.0&token=${token({ sub: 's', name: 'S' })}`
  const clients = []
  const open = () => new Promise((resolve, reject) => {
    const c = new WebSocket(url)
    c.once('open', () => resolve(c))
    c.once('error', reject)
  })
  try {
    for (let i = 0; i < STORM; i += 250) {
      const batch = await withTimeout(Promise.all(Array.from({ length: Math.min(250, STORM - i) }, open)), 'storm sockets open', 10_000)
      clients.push(...batch)
    }
    const start = Date.now()
    clients.forEach((c, i) => c.send(JSON.stringify(['1', '1', topic, 'phx_join', { user: `u${i}` }])))
    // Reported, not asserted (a test never asserts a timing): the joins leave in one loop.
    t.diagnostic(`${STORM} joins sent in ${Date.now() - start} ms`)
    // A storm client closed by the gateway (a slow consumer: 1008 "send queue full") takes its
    // entry with it and the list can never be whole: fail at once, with the cause.
    const closedEarly = new Promise((resolve, reject) => clients.forEach((c, i) =>
      c.once('close', (code, reason) => reject(new Error(`storm client ${i} closed: ${code} ${reason}`)))))
    closedEarly.catch(() => {})
    await Promise.race([
      watch.until('watcher lists the whole storm', p => keysOf(p).length === STORM + 1, 60_000),
      closedEarly
    ])
    // Reported, not asserted: how the joins spread over the diffs the watcher received.
    t.diagnostic(`${diffs.length} diffs over ${diffs[diffs.length - 1] - diffs[0]} ms`)
    // Batching bounds the count: the flusher sends a topic at most one diff per batch, and its
    // batches are at least BATCH_MS apart, so however long the storm took, the watcher gets no
    // more diffs than windows of BATCH_MS fit between the first join sent and the last diff seen
    // (+1 for the first window, +1 for a diff of the watcher's own join still in flight). Without
    // batching there would be one per join.
    const windows = Math.floor((diffs[diffs.length - 1] - start) / BATCH_MS) + 2
    assert.ok(diffs.length >= 1 && diffs.length <= windows, `${diffs.length} diffs for ${STORM} joins in ${windows} batch windows`)
    assert.equal(await overflows(), 0, 'no member was closed as a slow consumer')
    const keys = keysOf(watch.presence)
    assert.deepEqual(new Set(keys), new Set(['watcher', ...clients.map((_c, i) => `u${i}`)]))
    const view = await (await fetch(`${admin}/api/presence/${encodeURIComponent(topic)}`)).json()
    assert.equal(Object.keys(view).length, STORM + 1)
    const during = await presenceStats()
    assert.equal(during.stats.entries, before.stats.entries + STORM, JSON.stringify(during))
    assert.equal(during.entries, during.stats.entries)
    assert.equal(during.stats.topics, before.stats.topics)

    // The room is full: one more join is refused with a reason.
    const extra = await replyOf((await openSocket()).channel(topic, { user: 'late' }).join(), 'join past the limit')
    assert.deepEqual(extra, { status: 'error', response: { reason: 'presence limit reached' } })
  } finally {
    for (const c of clients) c.terminate()
  }
  await watch.until('everyone left', p => keysOf(p).join() === 'watcher', 60_000)
  const afterwards = await presenceStats()
  assert.equal(afterwards.stats.entries, before.stats.entries, JSON.stringify(afterwards))
  assert.equal(afterwards.entries, before.stats.entries)
})

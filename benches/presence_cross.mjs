// Cross-node presence convergence, measured with real processes: a redis-server, gateways on the
// bus with a presence route, and the official phoenix.js `Presence` as the observer.
//
//   node benches/presence_cross.mjs [--reps 31] [--kills 5]
//
// Needs a release build (or RINGGATE_BIN_PATH), redis-server, and `npm ci --prefix tests/js`.
// Prints a markdown table; every process started here is stopped by PID at the end.
//
// - Join: a client joins on gateway a; the time until an observer on gateway b lists it
//   (onJoin), against the same-run baseline of an observer on a itself (the local path: the
//   batch only). Measured from the join's ok reply. Median [min–max] over --reps joins.
// - Kill: a member on gateway c, c SIGKILLed; the time until the observer on b sees it leave
//   (node_timeout_ms of silence, then the next replica tick and batch). --kills repetitions.

import { mkdtempSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join as pathJoin } from 'node:path'

import { startGateway, startRedis } from '../tests/js/bus/helpers.mjs'

const require = createRequire(new URL('../tests/js/package.json', import.meta.url))
const { Presence, Socket } = require('phoenix')
const WebSocket = require('ws')

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? Number(process.argv[i + 1]) : dflt
}
const REPS = arg('--reps', 31)
const KILLS = arg('--kills', 5)
const BATCH_MS = 50
const HEARTBEAT_MS = 300
const NODE_TIMEOUT_MS = 3000

const cleanups = []
const t = { after: fn => cleanups.push(fn) }

const dir = mkdtempSync(pathJoin(tmpdir(), 'ringgate-presence-bench-'))
const config = pathJoin(dir, 'ringgate.toml')
writeFileSync(config, `
[presence]
batch_ms = ${BATCH_MS}
heartbeat_ms = ${HEARTBEAT_MS}
node_timeout_ms = ${NODE_TIMEOUT_MS}

[[channels]]
pattern = "room:*"
on_push = "broadcast"
presence = true
presence_key = "param:user"
`)

const gateway = (url, name) => startGateway(t, { busUrl: url, name, args: ['--config', config] })

function timeout (promise, what, ms = 30000) {
  let timer
  return Promise.race([promise, new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)
  })]).finally(() => clearTimeout(timer))
}

async function connect (gw) {
  const socket = new Socket(gw.url, { transport: WebSocket, reconnectAfterMs: () => 60_000, rejoinAfterMs: () => 60_000 })
  cleanups.push(() => { for (const c of socket.channels) c.rejoinTimer.reset(); socket.reconnectTimer.reset(); socket.disconnect() })
  socket.connect()
  return socket
}

async function join (socket, topic, user) {
  const ch = socket.channel(topic, { user })
  await timeout(new Promise((resolve, reject) => ch.join().receive('ok', resolve).receive('error', reject)), `join ${user}`)
  return ch
}

/** An observer: resolves `seen(key, 'join'|'leave')` with the time it happened. */
async function observer (gw, topic, name) {
  const socket = await connect(gw)
  const ch = socket.channel(topic, { user: name })
  const presence = new Presence(ch)
  const waiters = new Map()
  const fire = (key, kind) => {
    const w = waiters.get(`${kind}:${key}`)
    if (w) { waiters.delete(`${kind}:${key}`); w(performance.now()) }
  }
  presence.onJoin((key, current) => { if (!current) fire(key, 'join') })
  presence.onLeave((key, current) => { if (current.metas.length === 0) fire(key, 'leave') })
  await timeout(new Promise((resolve, reject) => ch.join().receive('ok', resolve).receive('error', reject)), `observer ${name}`)
  return { seen: (key, kind) => new Promise(resolve => waiters.set(`${kind}:${key}`, resolve)) }
}

const stats = xs => {
  const s = [...xs].sort((a, b) => a - b)
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] }
}
const fmt = ({ median, min, max }) => `${median.toFixed(1)} [${min.toFixed(1)}–${max.toFixed(1)}]`

try {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const a = await gateway(url, 'a')
  const b = await gateway(url, 'b')
  const topic = `room:bench-${Date.now()}`
  const onA = await observer(a, topic, 'observer-a')
  const onB = await observer(b, topic, 'observer-b')
  const joiner = await connect(a)
  const local = []
  const cross = []
  for (let i = 0; i < REPS; i++) {
    const key = `u${i}`
    const seenA = onA.seen(key, 'join')
    const seenB = onB.seen(key, 'join')
    const ch = await join(joiner, topic, key)
    const t0 = performance.now()
    local.push(await timeout(seenA, `${key} on a`) - t0)
    cross.push(await timeout(seenB, `${key} on b`) - t0)
    const goneB = onB.seen(key, 'leave')
    await timeout(new Promise(resolve => ch.leave().receive('ok', resolve)), `leave ${key}`)
    await timeout(goneB, `${key} leaves b`)
  }
  const kills = []
  for (let i = 0; i < KILLS; i++) {
    const c = await gateway(url, `c${i}`)
    const key = `victim${i}`
    const seen = onB.seen(key, 'join')
    await join(await connect(c), topic, key)
    await timeout(seen, `${key} on b`)
    const gone = onB.seen(key, 'leave')
    const t0 = performance.now()
    c.kill('SIGKILL')
    kills.push(await timeout(gone, `${key} leaves b`, NODE_TIMEOUT_MS + 30000) - t0)
  }
  const l = stats(local)
  const x = stats(cross)
  const k = stats(kills)
  console.log(`batch_ms ${BATCH_MS}, heartbeat_ms ${HEARTBEAT_MS}, node_timeout_ms ${NODE_TIMEOUT_MS}; ms, median [min–max]`)
  console.log('| what | n | ms | vs baseline |')
  console.log('|---|---|---|---|')
  console.log(`| join seen on the same node (baseline) | ${REPS} | ${fmt(l)} | 1.00 |`)
  console.log(`| join seen on the other node | ${REPS} | ${fmt(x)} | ${(x.median / l.median).toFixed(2)} |`)
  console.log(`| SIGKILL → leave seen on another node | ${KILLS} | ${fmt(k)} | node_timeout_ms + ${(k.median - NODE_TIMEOUT_MS).toFixed(0)} |`)
} finally {
  for (const fn of cleanups.reverse()) {
    try { await fn() } catch {}
  }
}

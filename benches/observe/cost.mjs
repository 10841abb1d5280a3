// The cost of observing a loaded gateway (run by benches/observe.sh, which starts the gateway and
// the N idle subscribers): how long GET /metrics and GET /api/stats take at N connections, and
// broadcast deliveries/s with the live dashboard open vs closed, in alternating phases of one run.
//
// Deliveries/s is measured in a closed loop that touches no statistics endpoint: OBSERVERS extra
// V2 connections join the topic too; a broadcast counts as done when every observer has it (the
// observers sit at random places in the workers' member lists, so this is the time to ~the last
// member), and the next one is published then. deliveries/s = members × broadcasts / phase time.
// "Open" = one headless Chromium page on GET / (polling /api/stats once a second, drawing charts).
// With GATEWAY_PID set, first the gateway's own CPU use with no broadcast, closed vs open: the
// dashboard's absolute cost, free of the broadcast phases' noise.
//
// node benches/observe/cost.mjs ADMIN_URL WS_URL MEMBERS OUT.json

import { readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'

const require = createRequire(new URL('../../tests/browser/package.json', import.meta.url))
const { chromium } = require('playwright-core')
const WebSocket = require('ws')

const [ADMIN, WS_URL, MEMBERS_ARG, OUT] = process.argv.slice(2)
const SCRAPES = Number(process.env.SCRAPES ?? 21)
const PHASE_S = Number(process.env.PHASE_S ?? 20)
const PAIRS = Number(process.env.PAIRS ?? 3)
const OBSERVERS = Number(process.env.OBSERVERS ?? 32)
const TOPIC = process.env.TOPIC ?? 'rooms:lobby'
const BROADCAST_TIMEOUT_MS = 20000

const GATEWAY_PID = process.env.GATEWAY_PID
const IDLE_PHASE_S = Number(process.env.IDLE_PHASE_S ?? 15)
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const median = xs => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const spread = xs => ({ median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length })

async function timeGet (path) {
  const times = []
  let bytes = 0
  for (let i = 0; i < SCRAPES; i++) {
    const t0 = performance.now()
    const r = await fetch(ADMIN + path)
    const body = await r.arrayBuffer()
    times.push(performance.now() - t0)
    bytes = body.byteLength
    await sleep(200)
  }
  return { ms: spread(times), bytes }
}

function observer (i, onBroadcast) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${WS_URL}?vsn=2.0.0`)
    ws.on('error', reject)
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', TOPIC, 'phx_join', { user: `observer-${i}` }])))
    ws.on('message', data => {
      const m = JSON.parse(data)
      if (m[3] === 'phx_reply' && m[1] === '1') resolve(ws)
      else if (m[3] === 'obs') onBroadcast(i, m[4].seq)
    })
  })
}

let seq = 0
let waiting = null // { seq, left: Set, resolve }
function onBroadcast (i, s) {
  if (waiting && s === waiting.seq) {
    waiting.left.delete(i)
    if (waiting.left.size === 0) waiting.resolve()
  }
}

async function broadcastOnce () {
  seq += 1
  const done = new Promise((resolve, reject) => {
    waiting = { seq, left: new Set([...Array(OBSERVERS).keys()]), resolve }
    setTimeout(() => reject(new Error(`broadcast ${seq} not at every observer in ${BROADCAST_TIMEOUT_MS} ms`)), BROADCAST_TIMEOUT_MS)
  })
  const r = await fetch(`${ADMIN}/api/broadcast`, {
    method: 'POST',
    body: JSON.stringify({ topic: TOPIC, event: 'obs', payload: { seq, pad: 'x'.repeat(64) } })
  })
  const { subscribers } = await r.json()
  await done
  return subscribers
}

async function phase (name) {
  const t0 = performance.now()
  let deliveries = 0
  let broadcasts = 0
  while (performance.now() - t0 < PHASE_S * 1000) {
    deliveries += await broadcastOnce()
    broadcasts += 1
  }
  const s = (performance.now() - t0) / 1000
  const row = { phase: name, broadcasts, deliveries, seconds: s, deliveries_per_s: deliveries / s }
  console.log(JSON.stringify(row))
  return row
}

/** The gateway's CPU time so far, seconds (utime + stime of /proc/PID/stat, 100 ticks/s). */
function gatewayCpuS () {
  const stat = readFileSync(`/proc/${GATEWAY_PID}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

/** With no broadcasts: the gateway's CPU use (ms per s) over a phase, dashboard closed or open. */
async function idlePhase (name, page) {
  const c0 = gatewayCpuS(); const t0 = performance.now()
  await sleep(IDLE_PHASE_S * 1000)
  const row = { phase: name, cpu_ms_per_s: (gatewayCpuS() - c0) * 1000 / ((performance.now() - t0) / 1000) }
  if (page) row.shown = await page.textContent('#v-connections')
  console.log(JSON.stringify(row))
  return row
}

/**
 * CPU of the gateway per GET of `path`: POLLS back-to-back requests, minus the background (the
 * clients' heartbeats) measured over an equal quiet window before. What one dashboard poll costs
 * (the dashboard makes one a second).
 */
async function costPerGet (path, polls = 200) {
  const q0 = gatewayCpuS(); const tq = performance.now()
  await sleep(5000)
  const background = (gatewayCpuS() - q0) / ((performance.now() - tq) / 1000)
  const c0 = gatewayCpuS(); const t0 = performance.now()
  for (let i = 0; i < polls; i++) await (await fetch(ADMIN + path)).arrayBuffer()
  const wall = (performance.now() - t0) / 1000
  const cpu = gatewayCpuS() - c0
  const row = { path, polls, background_cpu_ms_per_s: background * 1000, cpu_ms_per_get: Math.max(0, cpu - background * wall) * 1000 / polls }
  console.log(JSON.stringify(row))
  return row
}

const members = Number(MEMBERS_ARG)
const result = { members, observers: OBSERVERS, phase_s: PHASE_S, pairs: PAIRS }
result.metrics = await timeGet('/metrics')
result.api_stats = await timeGet('/api/stats')
console.log(JSON.stringify({ metrics: result.metrics, api_stats: result.api_stats }))

const sockets = await Promise.all([...Array(OBSERVERS).keys()].map(i => observer(i, onBroadcast)))
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] })
const rows = []
const idle = []
try {
  if (GATEWAY_PID) {
    result.cpu_per_get = []
    for (let r = 0; r < 3; r++) {
      result.cpu_per_get.push(await costPerGet('/api/stats'))
      result.cpu_per_get.push(await costPerGet('/metrics'))
    }
    for (let p = 0; p < PAIRS; p++) {
      idle.push(await idlePhase('idle-closed'))
      const context = await browser.newContext({ viewport: { width: 1366, height: 900 } })
      const page = await context.newPage()
      await page.goto(`${ADMIN}/`)
      await page.waitForFunction(() => document.getElementById('status').textContent === 'live')
      idle.push(await idlePhase('idle-open', page))
      await context.close()
    }
  }
  await phase('warm-up')
  for (let p = 0; p < PAIRS; p++) {
    rows.push(await phase('closed'))
    const context = await browser.newContext({ viewport: { width: 1366, height: 900 } })
    const page = await context.newPage()
    await page.goto(`${ADMIN}/`)
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live')
    rows.push(await phase('open'))
    result.dashboard_connections_shown = await page.textContent('#v-connections')
    await context.close()
  }
} finally {
  await browser.close()
  for (const ws of sockets) ws.terminate()
}
const closed = rows.filter(r => r.phase === 'closed').map(r => r.deliveries_per_s)
const open = rows.filter(r => r.phase === 'open').map(r => r.deliveries_per_s)
result.phases = rows
if (idle.length) {
  result.idle_cpu_ms_per_s = {
    closed: spread(idle.filter(r => r.phase === 'idle-closed').map(r => r.cpu_ms_per_s)),
    open: spread(idle.filter(r => r.phase === 'idle-open').map(r => r.cpu_ms_per_s))
  }
  console.log(JSON.stringify({ idle_cpu_ms_per_s: result.idle_cpu_ms_per_s }))
}
result.closed = spread(closed)
result.open = spread(open)
result.open_over_closed = median(open) / median(closed)
console.log(JSON.stringify({ closed: result.closed, open: result.open, open_over_closed: result.open_over_closed }))
writeFileSync(OUT, JSON.stringify(result, null, 2) + '\n')

// Multi-node helpers: real redis-server processes (standalone or a 3+3 Cluster), several
// ringgate gateways on the bus, and the official phoenix.js client. Every service gets free
// loopback ports, no persistence, and is stopped by PID when the test ends.
//
// Environment: RINGGATE_BIN_PATH (the gateway binary, read by ../../support/gateway.mjs).

import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { Socket } from 'phoenix'
import WebSocket from 'ws'

import { freePort, sleep, spawnGateway } from '../../support/gateway.mjs'

export { freePort, sleep }

export function withTimeout (promise, what, ms = 5000) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Polls `check` (async, truthy = done) every 100 ms until it holds; fails after `ms`. */
export async function until (check, what, ms = 10000) {
  const deadline = Date.now() + ms
  let last
  while (Date.now() < deadline) {
    try {
      last = await check()
      if (last) return last
    } catch (e) { last = e }
    await sleep(100)
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})`)
}

/** Runs redis-cli against `port`; resolves with its stdout. */
export function redisCli (port, ...args) {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10000 },
      (err, stdout, stderr) => err ? reject(new Error(`redis-cli ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout))
  })
}

/** A redis-server child on a free port (or `port`), no persistence; stopped when `t` ends. */
export async function startRedis (t, { port, args = [] } = {}) {
  port ??= await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'ringgate-redis-'))
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--dir', dir, '--logfile', join(dir, 'redis.log'), ...args], { stdio: 'ignore' })
  const exited = new Promise(resolve => child.once('exit', resolve))
  const redis = {
    port,
    log: () => { try { return readFileSync(join(dir, 'redis.log'), 'utf8') } catch { return '' } },
    child,
    exited,
    async stop (signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      await withTimeout(exited, `redis ${port} to exit`, 10000)
    }
  }
  t.after(async () => { await redis.stop('SIGKILL'); rmSync(dir, { recursive: true, force: true }) })
  await until(async () => (await redisCli(port, 'PING')).trim() === 'PONG', `redis on ${port}`)
  return redis
}

/** 3 masters + 3 replicas joined with `redis-cli --cluster create`. */
export async function startCluster (t) {
  const nodes = []
  for (let i = 0; i < 6; i++) {
    nodes.push(await startRedis(t, {
      args: ['--cluster-enabled', 'yes', '--cluster-node-timeout', '1000',
        '--cluster-config-file', `nodes-${i}.conf`]
    }))
  }
  await redisCli(nodes[0].port, '--cluster', 'create', ...nodes.map(n => `127.0.0.1:${n.port}`),
    '--cluster-replicas', '1', '--cluster-yes')
  await until(async () => {
    for (const n of nodes) {
      if (!(await redisCli(n.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok')) return false
    }
    return true
  }, 'cluster_state:ok on every node', 20000)
  // A replica that has not yet synced with its master refuses to fail over ("disconnected from
  // master for longer than allowed"): wait for every replication link.
  await until(async () => {
    for (const n of nodes) {
      const info = await redisCli(n.port, 'INFO', 'replication')
      if (info.includes('role:slave') && !info.includes('master_link_status:up')) return false
    }
    return true
  }, 'every replica in sync with its master', 20000)
  return nodes
}

/** `CLUSTER NODES` parsed: [{id, port, role, masterId}] for connected nodes. */
export async function clusterNodes (port) {
  const text = await redisCli(port, 'CLUSTER', 'NODES')
  return text.trim().split('\n').map(line => {
    const [id, addr, flags, master] = line.split(' ')
    return {
      id,
      port: Number(addr.split('@')[0].split(':')[1]),
      role: flags.includes('master') ? 'master' : 'replica',
      failed: flags.includes('fail'),
      masterId: master === '-' ? null : master
    }
  })
}

/**
 * A gateway on the bus. Extra flags in `args`. Killed (SIGKILL) when `t` ends if still running.
 */
export async function startGateway (t, { busUrl, name, args = [] }) {
  const argv = ['--workers', '2', '--log-level', process.env.RINGGATE_TEST_LOG_LEVEL ?? 'warn', '--max-joins-per-second', '0',
    '--bus-heartbeat-ms', '200', '--bus-node-ttl-ms', '1500', '--bus-linger-ms', '500']
  if (busUrl) argv.push('--bus-url', busUrl)
  if (name) argv.push('--bus-node-name', name)
  const base = await spawnGateway({ args: [...argv, ...args], what: `gateway ${name}` })
  const { admin, exited } = base
  t.after(async () => { base.kill('SIGKILL'); await withTimeout(exited, `gateway ${name} to exit`, 10000) })
  return {
    ...base,
    name,
    url: `ws://127.0.0.1:${base.port}/socket`,
    get: path => getJson(admin + path),
    post: (path, body) => postJson(admin + path, body),
    metrics: () => metrics(admin)
  }
}

export async function getJson (url) {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) })
  return { httpStatus: r.status, ...(await r.json()) }
}

export async function postJson (url, body) {
  const r = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000)
  })
  return { httpStatus: r.status, ...(await r.json()) }
}

/** Prometheus text → {"name{labels}": value}. */
export async function metrics (admin) {
  const text = await (await fetch(`${admin}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
  const out = {}
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const i = line.lastIndexOf(' ')
    out[line.slice(0, i)] = Number(line.slice(i + 1))
  }
  return out
}

/**
 * An official phoenix.js socket on `url`, connected, with channels joined on `topics`. Every
 * `event` payload received per topic is recorded in order in `got[topic]`.
 */
export async function client (t, url, topics, { event = 'msg', reconnect = false } = {}) {
  const socket = new Socket(url, {
    transport: WebSocket,
    timeout: 5000,
    reconnectAfterMs: () => reconnect ? 200 : 60_000,
    rejoinAfterMs: () => reconnect ? 200 : 60_000
  })
  t.after(() => {
    for (const ch of socket.channels) ch.rejoinTimer.reset()
    socket.reconnectTimer.reset()
    socket.disconnect()
  })
  const got = {}
  const channels = {}
  socket.connect()
  await Promise.all(topics.map(topic => {
    got[topic] = []
    const ch = socket.channel(topic, {})
    ch.on(event, payload => got[topic].push(payload))
    channels[topic] = ch
    return withTimeout(new Promise((resolve, reject) => {
      ch.join().receive('ok', resolve).receive('error', e => reject(new Error(`join ${topic}: ${JSON.stringify(e)}`)))
    }), `join ${topic} on ${url}`)
  }))
  return { socket, got, channels }
}

/** Subscribers of a (standalone) channel, from PUBSUB NUMSUB. */
export async function numsub (port, channel) {
  return Number((await redisCli(port, 'PUBSUB', 'NUMSUB', channel)).trim().split('\n')[1])
}

/** Pushes `n` messages {n: i, from} on `channel` (client push → broadcast to the topic). */
export async function pushMany (channel, n, from) {
  for (let i = 0; i < n; i++) {
    await withTimeout(new Promise((resolve, reject) => {
      channel.push('msg', { n: i, from }).receive('ok', resolve).receive('error', reject)
    }), `push ${i}`)
  }
}

/** Waits until `list` holds exactly the `want` payloads (in order), then a short quiet period to
 * catch any duplicate. */
export async function expectExactly (list, want, what, quietMs = 300) {
  await until(() => list.length >= want.length, `${what}: ${want.length} messages (have ${list.length})`, 15000)
  await sleep(quietMs)
  const a = JSON.stringify(list)
  const b = JSON.stringify(want)
  if (a !== b) throw new Error(`${what}: got ${a}\nwant ${b}`)
}

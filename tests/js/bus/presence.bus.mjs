// Presence across gateways on a real redis-server, as the official phoenix.js `Presence` (the npm
// package, unmodified) sees it: every client on every node lists the same members; a node joining
// late gets the others' members; a SIGKILLed node's members leave everywhere once its heartbeats
// stop for node_timeout_ms; Redis restarted mid-run, after an outage longer and one shorter than
// node_timeout_ms (changes made while it was down are lost on the bus) → every list converges
// again without restarting a gateway, no zombie; a clean stop's members leave at once; the same
// lists over a Redis Cluster (SPUBLISH/SSUBSCRIBE); entries a misbehaving node publishes past
// this node's bounds (a broken or oversized meta, a full topic) are not merged, and counted.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { Presence, Socket } from 'phoenix'
import WebSocket from 'ws'

import { startCluster, startGateway, startRedis, until, withTimeout } from './helpers.mjs'

/** Short so the test runs in seconds; production defaults are 1,500 / 15,000 ms. */
const HEARTBEAT_MS = 300
const NODE_TIMEOUT_MS = 3000

const config = (nodeTimeoutMs = NODE_TIMEOUT_MS, maxMembers = 10000) => `
[presence]
max_members = ${maxMembers}
batch_ms = 20
heartbeat_ms = ${HEARTBEAT_MS}
node_timeout_ms = ${nodeTimeoutMs}

[[channels]]
pattern = "room:*"
on_push = "broadcast"
presence = true
presence_key = "param:user"
presence_meta = ["param:node"]
`

function configFile (nodeTimeoutMs, maxMembers) {
  const dir = mkdtempSync(join(tmpdir(), 'ringgate-presence-bus-'))
  const path = join(dir, 'ringgate.toml')
  writeFileSync(path, config(nodeTimeoutMs, maxMembers))
  return path
}

/** A gateway with the presence routes, on the bus at `url`. */
function gateway (t, url, name, { nodeTimeoutMs, maxMembers, args = [] } = {}) {
  return startGateway(t, { busUrl: url, name, args: ['--config', configFile(nodeTimeoutMs, maxMembers), ...args] })
}

/** An official socket with `Presence` on `topic`, joined as `user`; `.keys()` lists the members. */
async function member (t, gw, topic, user) {
  const socket = new Socket(gw.url, {
    transport: WebSocket,
    timeout: 5000,
    reconnectAfterMs: () => 60_000,
    rejoinAfterMs: () => 60_000
  })
  t.after(() => {
    for (const ch of socket.channels) ch.rejoinTimer.reset()
    socket.reconnectTimer.reset()
    socket.disconnect()
  })
  socket.connect()
  const channel = socket.channel(topic, { user, node: gw.name })
  const presence = new Presence(channel)
  let synced = false
  presence.onSync(() => { synced = true })
  await withTimeout(new Promise((resolve, reject) => {
    channel.join().receive('ok', resolve).receive('error', e => reject(new Error(`join ${user}: ${JSON.stringify(e)}`)))
  }), `join ${topic} as ${user} on ${gw.name}`)
  return {
    user,
    node: gw.name,
    socket,
    channel,
    presence,
    keys: () => synced ? presence.list(key => key).sort() : null,
    metas: key => presence.list((k, p) => k === key ? p.metas : null).filter(Boolean)[0] ?? []
  }
}

/**
 * Waits until every member lists exactly `want` (sorted keys) and, when given, `also(member)` holds
 * for each: a key's metas arrive from each node on that node's own batch and bus trip, so a check
 * on them waits too rather than trusting that the keys came last.
 */
async function allList (members, want, what, ms = 15000, also = () => true) {
  const expect = [...want].sort().join()
  await until(() => members.every(m => m.keys()?.join() === expect && also(m)),
    `${what}: every client lists ${expect} (now ${members.map(m => `${m.node}/${m.user}=${m.keys()?.join()}`).join(' ')})`, ms)
}

/** The admin view of every gateway lists `want` too. */
async function allAdmin (gws, topic, want, what) {
  const expect = [...want].sort().join()
  await until(async () => {
    for (const gw of gws) {
      const view = await (await fetch(`${gw.admin}/api/presence/${encodeURIComponent(topic)}`)).json()
      if (Object.keys(view).sort().join() !== expect) return false
    }
    return true
  }, `${what}: /api/presence on every node lists ${expect}`)
}

test('3 gateways: one list everywhere, a late node gets the state, a killed node leaves', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const a = await gateway(t, url, 'a')
  const b = await gateway(t, url, 'b')
  const topic = `room:cross-${Date.now()}`
  const members = []
  for (const [gw, user] of [[a, 'a1'], [a, 'a2'], [b, 'b1'], [a, 'shared'], [b, 'shared']]) {
    members.push(await member(t, gw, topic, user))
  }
  // One key on two nodes is one member with two metas, each naming its node.
  const sharedOn = m => m.metas('shared').map(x => x.node).sort().join()
  await allList(members, ['a1', 'a2', 'b1', 'shared'], 'two nodes', 15000, m => sharedOn(m) === 'a,b')
  for (const m of members) {
    assert.deepEqual(m.metas('shared').map(x => x.node).sort(), ['a', 'b'])
    assert.equal(new Set(m.metas('shared').map(x => x.phx_ref)).size, 2)
  }

  // A node started after the members joined: its joiners see everyone.
  const c = await gateway(t, url, 'c')
  for (const user of ['c1', 'c2']) members.push(await member(t, c, topic, user))
  const everyone = ['a1', 'a2', 'b1', 'c1', 'c2', 'shared']
  await allList(members, everyone, 'three nodes')
  await allAdmin([a, b, c], topic, everyone, 'three nodes')

  // A leave on one node reaches the others; b's "shared" connection leaving keeps a's.
  const a2 = members.find(m => m.user === 'a2')
  const bShared = members.find(m => m.user === 'shared' && m.node === 'b')
  await withTimeout(new Promise(resolve => a2.channel.leave().receive('ok', resolve)), 'a2 leave')
  await withTimeout(new Promise(resolve => bShared.channel.leave().receive('ok', resolve)), 'b shared leave')
  const stayed = members.filter(m => m !== a2 && m !== bShared)
  const afterLeave = ['a1', 'b1', 'c1', 'c2', 'shared']
  await allList(stayed, afterLeave, 'after two leaves', 15000, m => sharedOn(m) === 'a')
  for (const m of stayed) assert.deepEqual(m.metas('shared').map(x => x.node), ['a'])

  // c is killed: no leave is sent, so its members leave everywhere once its heartbeats have
  // been missing for node_timeout_ms (bounded generously here, never asserted as a time).
  c.kill('SIGKILL')
  await withTimeout(c.exited, 'c to exit')
  const survivors = stayed.filter(m => m.node !== 'c')
  const afterKill = ['a1', 'b1', 'shared']
  await allList(survivors, afterKill, 'after c was killed', NODE_TIMEOUT_MS + 20000)
  await allAdmin([a, b], topic, afterKill, 'after c was killed')
  const m = await a.metrics()
  assert.ok(m.ringgate_bus_presence_nodes_timed_out_total >= 1, 'the timeout is what removed c')
})

test('Redis down longer than node_timeout_ms, then restarted: the lists converge, changes of the outage included, no zombie', async t => {
  let redis = await startRedis(t)
  const port = redis.port
  const url = `redis://127.0.0.1:${port}`
  const a = await gateway(t, url, 'a')
  const b = await gateway(t, url, 'b')
  const topic = `room:outage-${Date.now()}`
  const members = []
  for (const [gw, user] of [[a, 'a1'], [b, 'b1'], [b, 'b2']]) members.push(await member(t, gw, topic, user))
  await allList(members, ['a1', 'b1', 'b2'], 'before the outage')

  await redis.stop('SIGKILL')
  for (const gw of [a, b]) {
    await until(async () => (await gw.get('/healthz')).degraded === true, `${gw.name} degraded`)
  }
  // While Redis is down: a joiner on a and a leave on b, each seen only on its own node.
  members.push(await member(t, a, topic, 'a-during'))
  const b2 = members.find(m => m.user === 'b2')
  await withTimeout(new Promise(resolve => b2.channel.leave().receive('ok', resolve)), 'b2 leave')
  const live = members.filter(m => m !== b2)
  const aSide = live.filter(m => m.node === 'a')
  const bSide = live.filter(m => m.node === 'b')
  // An outage longer than node_timeout_ms: each side's clients are left with their own node's
  // members (the other node's members leave, as after a node loss).
  await allList(aSide, ['a1', 'a-during'], 'a alone during the outage', NODE_TIMEOUT_MS + 20000)
  await allList(bSide, ['b1'], 'b alone during the outage', NODE_TIMEOUT_MS + 20000)

  redis = await startRedis(t, { port })
  for (const gw of [a, b]) {
    await until(async () => (await gw.get('/healthz')).degraded === false, `${gw.name} back up`, 15000)
  }
  const want = ['a1', 'a-during', 'b1']
  await allList(live, want, 'after the restart', NODE_TIMEOUT_MS + 20000)
  await allAdmin([a, b], topic, want, 'after the restart')
  // The repair went through transfers (the deltas of the outage were never delivered).
  const transfers = (await a.metrics()).ringgate_bus_presence_transfers_sent_total +
    (await b.metrics()).ringgate_bus_presence_transfers_sent_total
  assert.ok(transfers >= 2, `state transfers after the restart: ${transfers}`)

  // Still live after the restart: a new joiner on b reaches a.
  live.push(await member(t, b, topic, 'b-after'))
  await allList(live, [...want, 'b-after'], 'a join after the restart')
})

test('Redis down shorter than node_timeout_ms: members stay listed, lost changes are repaired', async t => {
  let redis = await startRedis(t)
  const port = redis.port
  const url = `redis://127.0.0.1:${port}`
  // Far longer than the outage: nobody times out, so only the repair can fix the lists.
  const slow = { nodeTimeoutMs: 120_000 }
  const a = await gateway(t, url, 'a', slow)
  const b = await gateway(t, url, 'b', slow)
  const topic = `room:blip-${Date.now()}`
  const members = []
  for (const [gw, user] of [[a, 'a1'], [b, 'b1'], [b, 'b2']]) members.push(await member(t, gw, topic, user))
  await allList(members, ['a1', 'b1', 'b2'], 'before the outage')
  await redis.stop('SIGKILL')
  for (const gw of [a, b]) {
    await until(async () => (await gw.get('/healthz')).degraded === true, `${gw.name} degraded`)
  }
  const b2 = members.find(m => m.user === 'b2')
  await withTimeout(new Promise(resolve => b2.channel.leave().receive('ok', resolve)), 'b2 leave')
  members.push(await member(t, a, topic, 'a-during'))
  const live = members.filter(m => m !== b2)
  // The delta of b2's leave was lost: a's clients still list b2 (frozen), b's do not.
  await allList(live.filter(m => m.node === 'b'), ['a1', 'b1'], 'b during the outage')
  await allList(live.filter(m => m.node === 'a'), ['a1', 'a-during', 'b1', 'b2'], 'a during the outage')
  redis = await startRedis(t, { port })
  await allList(live, ['a1', 'a-during', 'b1'], 'after the restart: repaired, no zombie b2')
  assert.equal((await a.metrics()).ringgate_bus_presence_nodes_timed_out_total, 0)
  assert.equal((await b.metrics()).ringgate_bus_presence_nodes_timed_out_total, 0)
})

test('a clean stop (SIGTERM): its members leave everywhere at once, not after the timeout', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  // A timeout far longer than the wait below: only the stopping node's own messages can make
  // its members leave within it.
  const slow = { nodeTimeoutMs: 120_000 }
  const a = await gateway(t, url, 'a', slow)
  const b = await gateway(t, url, 'b', { ...slow, args: ['--drain-ms', '0'] })
  const topic = `room:stop-${Date.now()}`
  const onA = await member(t, a, topic, 'a1')
  const onB = await member(t, b, topic, 'b1')
  await allList([onA, onB], ['a1', 'b1'], 'before the stop')
  b.kill('SIGTERM')
  await withTimeout(b.exited, 'b to exit after draining')
  await allList([onA], ['a1'], 'after b stopped', 20000)
  await allAdmin([a], topic, ['a1'], 'after b stopped')
  assert.equal((await a.metrics()).ringgate_bus_presence_nodes_timed_out_total, 0)
})

test('Redis Cluster (sharded pub/sub): one list on both gateways', async t => {
  const redis = await startCluster(t)
  const url = 'redis+cluster://' + redis.slice(0, 3).map(n => `127.0.0.1:${n.port}`).join(',')
  const a = await gateway(t, url, 'a')
  const b = await gateway(t, url, 'b')
  const topic = `room:cluster-${Date.now()}`
  const members = []
  for (const [gw, user] of [[a, 'a1'], [b, 'b1'], [b, 'b2']]) members.push(await member(t, gw, topic, user))
  await allList(members, ['a1', 'b1', 'b2'], 'on a cluster')
  const b2 = members.find(m => m.user === 'b2')
  await withTimeout(new Promise(resolve => b2.channel.leave().receive('ok', resolve)), 'b2 leave')
  await allList(members.filter(m => m !== b2), ['a1', 'b1'], 'after a leave on a cluster')
  await allAdmin([a, b], topic, ['a1', 'b1'], 'on a cluster')
})

test('entries another node publishes past this node\'s bounds are not merged, and counted', async t => {
  const redis = await startRedis(t)
  const a = await gateway(t, `redis://127.0.0.1:${redis.port}`, 'a', { maxMembers: 3 })
  const topic = `room:bounds-${Date.now()}`
  const m = await member(t, a, topic, 'alice')
  await allList([m], ['alice'], 'the local member')
  // A node that speaks the presence format (docs/protocol.md, "Presence across nodes") but
  // sends what this node would never hold of its own: its deltas, published by hand.
  const publish = wire => {
    const body = Buffer.concat([Buffer.from([1]), Buffer.from(JSON.stringify(wire))])
    const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), '-x', 'PUBLISH', 'presence@ringgate:'], { input: body, timeout: 10000 })
    assert.equal(r.status, 0, String(r.stderr))
  }
  const entry = (key, meta) => ({ topic, key, phx_ref: `ref-${key}`, meta: meta ?? JSON.stringify({ phx_ref: `ref-${key}`, online_at: '1', node: 'x' }) })
  const refused = async () => (await a.metrics()).ringgate_bus_presence_entries_refused_total
  publish({ t: 'delta', node: 77, seq: 1, leaves: [], joins: [entry('bob'), entry('mallory', '{"phx_ref":'), entry('eve', JSON.stringify({ pad: 'x'.repeat(1024) }))] })
  await allList([m], ['alice', 'bob'], 'the well-formed remote entry only')
  assert.equal(await refused(), 2, 'a broken and an oversized meta')
  // Another node's entries are merged up to twice max_members (3 here): the topic holds 2, so
  // 4 of these 6 join and 2 are refused.
  const more = ['carol', 'dave', 'erin', 'frank', 'grace', 'heidi']
  publish({ t: 'delta', node: 77, seq: 2, leaves: [], joins: more.map(k => entry(k)) })
  await allList([m], ['alice', 'bob', ...more.slice(0, 4)], 'up to twice max_members')
  await until(async () => await refused() === 4, 'two joins past twice max_members counted')
})

// Faults with real processes: Redis stopped mid-run (local delivery continues, publishes are
// dropped and counted, /healthz says degraded; restarted on the same port, cross-node delivery
// resumes without restarting the gateways), Redis down while clients churn through many topics
// (the counts waiting for a heartbeat stay bounded; the node's counts hash is rewritten whole
// when Redis is back), and a gateway SIGKILLed (the others lose nothing, its cluster-view entry
// expires), and a message on a topic channel larger than any node publishes (refused before it is
// decoded, counted; the messages around it still delivered), and a burst from Redis past
// max_incoming_bytes (dropped, counted, the topic's members closed with 1013).

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { client, expectExactly, numsub, pushMany, redisCli, startGateway, startRedis, until, withTimeout } from './helpers.mjs'

test('Redis stopped and restarted under 2 gateways', async t => {
  let redis = await startRedis(t)
  const port = redis.port
  const url = `redis://127.0.0.1:${port}`
  const a = await startGateway(t, { busUrl: url, name: 'a' })
  const b = await startGateway(t, { busUrl: url, name: 'b' })
  const topic = `rooms:fault-${Date.now()}`
  const ma = await client(t, a.url, [topic])
  const mb = await client(t, b.url, [topic])
  await until(async () => await numsub(port, `ringgate:${topic}`) === 2, 'both nodes subscribed')
  const want = []
  await pushMany(ma.channels[topic], 3, 'before')
  for (let n = 0; n < 3; n++) want.push({ n, from: 'before' })
  await expectExactly(mb.got[topic], want, 'b before the outage')

  await redis.stop('SIGKILL')
  for (const gw of [a, b]) {
    await until(async () => (await gw.get('/healthz')).degraded === true, `${gw.name} degraded`)
    assert.equal((await fetch(`${gw.admin}/healthz`)).status, 200, 'still 200 for the balancer')
  }
  const dropsBefore = (await a.metrics())['ringgate_bus_dropped_total{reason="down"}']
  await pushMany(ma.channels[topic], 4, 'during')
  const wantA = [...want]
  for (let n = 0; n < 4; n++) wantA.push({ n, from: 'during' })
  await expectExactly(ma.got[topic], wantA, 'a keeps local delivery while Redis is down')
  await expectExactly(mb.got[topic], want, 'b gets nothing from a while Redis is down')
  const m = await a.metrics()
  assert.equal(m['ringgate_bus_dropped_total{reason="down"}'] - dropsBefore, 4, 'every lost publish counted')
  assert.equal(m.ringgate_bus_up, 0)

  redis = await startRedis(t, { port })
  for (const gw of [a, b]) {
    await until(async () => (await gw.get('/healthz')).degraded === false, `${gw.name} back up`, 15000)
  }
  await until(async () => await numsub(port, `ringgate:${topic}`) === 2, 'both nodes subscribed again')
  await pushMany(mb.channels[topic], 5, 'after')
  const after = Array.from({ length: 5 }, (_, n) => ({ n, from: 'after' }))
  await expectExactly(ma.got[topic], [...wantA, ...after], 'a receives from b after the restart')
  await expectExactly(mb.got[topic], [...want, ...after], 'b after the restart')
  assert.ok((await b.metrics()).ringgate_bus_reconnects_total >= 1)
})

test('Redis down under topic churn: waiting counts stay bounded, the hash is rewritten whole', async t => {
  let redis = await startRedis(t)
  const port = redis.port
  const dir = mkdtempSync(join(tmpdir(), 'ringgate-counts-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const config = join(dir, 'ringgate.toml')
  // A small bound, so a churn of 200 topics passes it.
  writeFileSync(config, '[bus]\nmax_pending_topics = 50\n')
  const a = await startGateway(t, {
    busUrl: `redis://127.0.0.1:${port}`,
    name: 'a',
    args: ['--config', config, '--max-channels-per-connection', '300', '--max-messages-per-second', '0']
  })
  const stamp = Date.now()
  const keep = `rooms:keep-${stamp}`
  await client(t, a.url, [keep])
  const key = '{ringgate:view}:counts:a'
  const hash = async p => {
    const lines = (await redisCli(p, 'HGETALL', key)).trim().split('\n').filter(Boolean)
    const out = {}
    for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i]] = lines[i + 1]
    return out
  }
  await until(async () => (await hash(port))[keep] === '1', 'the kept topic counted in Redis')

  await redis.stop('SIGKILL')
  await until(async () => (await a.get('/healthz')).degraded === true, 'a degraded')
  // 200 topics joined and left while Redis is down: each one's count waits for a heartbeat.
  const churn = Array.from({ length: 200 }, (_, i) => `rooms:churn-${stamp}-${i}`)
  const c = await client(t, a.url, churn)
  await Promise.all(churn.map(topic => withTimeout(new Promise((resolve, reject) => {
    c.channels[topic].leave().receive('ok', resolve).receive('error', reject)
  }), `leave ${topic}`)))
  assert.equal((await a.metrics()).ringgate_bus_count_rewrites_total, 0, 'nothing rewritten while down')

  redis = await startRedis(t, { port })
  await until(async () => (await a.get('/healthz')).degraded === false, 'a back up', 15000)
  await until(async () => JSON.stringify(await hash(port)) === JSON.stringify({ [keep]: '1' }),
    'the counts hash rewritten: the kept topic, none of the churned ones', 15000)
  assert.ok((await a.metrics()).ringgate_bus_count_rewrites_total >= 1, 'counted as a rewrite')
})

test('SIGKILL one of 3 gateways: the others lose nothing, its node entry expires', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const gws = []
  for (const name of ['a', 'b', 'c']) gws.push(await startGateway(t, { busUrl: url, name }))
  const topic = `rooms:kill-${Date.now()}`
  const ms = []
  for (const gw of gws) ms.push(await client(t, gw.url, [topic]))
  await until(async () => await numsub(redis.port, `ringgate:${topic}`) === 3, 'all subscribed')
  await until(async () => (await gws[0].get('/api/nodes')).nodes?.length === 3, '3 nodes listed')

  const want = []
  const pushing = (async () => {
    for (let round = 0; round < 10; round++) {
      await pushMany(ms[0].channels[topic], 5, `r${round}`)
      for (let n = 0; n < 5; n++) want.push({ n, from: `r${round}` })
      if (round === 3) gws[2].kill('SIGKILL')
    }
  })()
  await pushing
  await expectExactly(ms[0].got[topic], want, 'a (publisher) got every message')
  await expectExactly(ms[1].got[topic], want, 'b got every message across the kill')
  await until(async () => {
    const r = await gws[1].get('/api/nodes')
    return JSON.stringify(r.nodes.map(n => n.name)) === '["a","b"]'
  }, 'c to expire from /api/nodes')
  await until(async () => (await gws[0].get(`/api/topics/${encodeURIComponent(topic)}`)).cluster_subscribers === 2,
    'cluster count without c')
})

/** A ringgate envelope (docs/protocol.md, "Bus envelope") with a JSON payload, from `origin`. */
function envelope (origin, seq, topic, event, json) {
  const head = Buffer.from([0x52, 0x47, 1, 1, 0, origin.length])
  const num = Buffer.alloc(8)
  num.writeBigUInt64BE(BigInt(seq))
  const len = s => { const b = Buffer.alloc(2); b.writeUInt16BE(Buffer.byteLength(s)); return b }
  return Buffer.concat([head, Buffer.from(origin), num, len(topic), Buffer.from(topic), len(event), Buffer.from(event), Buffer.from(json)])
}

test('a message larger than any node publishes is refused before decoding; the others arrive', async t => {
  const redis = await startRedis(t)
  const a = await startGateway(t, { busUrl: `redis://127.0.0.1:${redis.port}`, name: 'a' })
  const topic = `rooms:big-${Date.now()}`
  const m = await client(t, a.url, [topic])
  const channel = `ringgate:${topic}`
  await until(async () => await numsub(redis.port, channel) === 1, 'a subscribed to the topic channel')
  const publish = body => {
    const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), '-x', 'PUBLISH', channel], { input: body, timeout: 10000 })
    assert.equal(r.status, 0, String(r.stderr))
  }
  publish(envelope('elsewhere', 1, topic, 'msg', '{"n":1}'))
  // The payload bound is the larger of max_message_bytes and the admin API's body (1 MiB each by
  // default), plus the longest envelope header (~128 KiB): 1.5 MiB is past it.
  publish(envelope('elsewhere', 2, topic, 'msg', `{"n":2,"pad":"${'x'.repeat(1536 * 1024)}"}`))
  publish(envelope('elsewhere', 3, topic, 'msg', '{"n":3}'))
  await expectExactly(m.got[topic], [{ n: 1 }, { n: 3 }], 'the member, around the refused message')
  const seen = await a.metrics()
  assert.equal(seen['ringgate_bus_rejected_total{reason="too_large"}'], 1, 'the big one counted as too large')
})

test('a burst from Redis past max_incoming_bytes: dropped, counted, and the topic\'s members closed with 1013', async t => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(join(tmpdir(), 'ringgate-incoming-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const config = join(dir, 'ringgate.toml')
  // A tiny bound, so one burst read in one go passes it before the bus task runs.
  writeFileSync(config, '[bus]\nmax_incoming_bytes = 1024\n')
  const a = await startGateway(t, { busUrl: `redis://127.0.0.1:${redis.port}`, name: 'a', args: ['--config', config] })
  const topic = `rooms:burst-${Date.now()}`
  const m = await client(t, a.url, [topic])
  const closed = new Promise(resolve => m.socket.onClose(e => resolve(e.code)))
  const channel = `ringgate:${topic}`
  await until(async () => await numsub(redis.port, channel) === 1, 'a subscribed to the topic channel')
  // 2,000 publishes from one script: Redis writes them back to back.
  const script = "for i = 1, 2000 do redis.call('PUBLISH', KEYS[1], ARGV[1]) end"
  const body = envelope('elsewhere', 1, topic, 'msg', `{"pad":"${'x'.repeat(200)}"}`)
  const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(redis.port), '-x', 'EVAL', script, '1', channel], { input: body, timeout: 10000 })
  assert.equal(r.status, 0, String(r.stderr))
  assert.equal(await withTimeout(closed, 'the member closed', 10000), 1013, 'closed with 1013 (try again later)')
  const seen = await a.metrics()
  assert.ok(seen.ringgate_bus_incoming_dropped_total > 0, 'drops counted')
  assert.ok(m.got[topic].length < 2000, `not everything arrived (${m.got[topic].length})`)
})

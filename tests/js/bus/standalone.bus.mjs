// Three gateways on one standalone redis-server, driven by phoenix.js: a broadcast pushed by a
// client on any node, or POSTed to any node's API, reaches every member on every node exactly
// once and in order; Redis sees exactly one PUBLISH per broadcast; a leave stops delivery there;
// the cluster view counts subscribers and nodes.

import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { test } from 'node:test'

import { client, expectExactly, numsub, pushMany, redisCli, sleep, startGateway, startRedis, until, withTimeout } from './helpers.mjs'

function calls (info, cmd) {
  return Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
}
const publishCalls = info => calls(info, 'publish')

test('3 gateways + standalone Redis: exactly once, in order, from any node', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const gws = []
  for (const name of ['a', 'b', 'c']) gws.push(await startGateway(t, { busUrl: url, name }))
  const topic = `rooms:bus-${Date.now()}`
  const members = []
  for (const gw of gws) {
    for (let i = 0; i < 2; i++) members.push({ gw, ...(await client(t, gw.url, [topic])) })
  }
  await until(async () => await numsub(redis.port, `ringgate:${topic}`) === 3, 'every node subscribed to the topic channel')
  const publishesBefore = publishCalls(await redisCli(redis.port, 'INFO', 'commandstats'))

  // A client push on each node in turn: 20 messages each, everyone gets all of them in order.
  const want = []
  for (const [i, gw] of gws.entries()) {
    const pusher = members.find(m => m.gw === gw)
    await pushMany(pusher.channels[topic], 20, gw.name)
    for (let n = 0; n < 20; n++) want.push({ n, from: gw.name })
    for (const [j, m] of members.entries()) {
      await expectExactly(m.got[topic], want, `member ${j} (node ${m.gw.name}) after pushes on node ${i}`)
    }
  }

  // POST /api/broadcast to each node's API, in turn. Order holds per publisher: a 202 means the
  // node has queued its local deliveries and handed the publish to its bus link, so the next
  // node's broadcasts could reach their own members first. As with the pushes, each node's batch
  // is awaited everywhere before the next node publishes.
  for (const gw of gws) {
    const batch = Array.from({ length: 10 }, (_, n) => ({ topic, event: 'msg', payload: { n, from: `api-${gw.name}` } }))
    const r = await gw.post('/api/broadcast', batch)
    assert.equal(r.httpStatus, 202)
    assert.equal(r.subscribers, 20, 'the 2 local members of each of the 10 broadcasts')
    for (let n = 0; n < 10; n++) want.push({ n, from: `api-${gw.name}` })
    for (const [j, m] of members.entries()) {
      await expectExactly(m.got[topic], want, `member ${j} (node ${m.gw.name}) after API broadcasts on node ${gw.name}`)
    }
  }

  const publishesAfter = publishCalls(await redisCli(redis.port, 'INFO', 'commandstats'))
  assert.equal(publishesAfter - publishesBefore, 3 * 20 + 3 * 10, 'one PUBLISH per broadcast, whatever the node and subscriber count')

  // Cluster view: nodes and counts.
  await until(async () => {
    const r = await gws[0].get(`/api/topics/${encodeURIComponent(topic)}`)
    return r.subscribers === 2 && r.cluster_subscribers === 6
  }, 'cluster_subscribers = 6')
  const nodes = await gws[1].get('/api/nodes')
  assert.equal(nodes.node, 'b')
  assert.deepEqual(nodes.nodes.map(n => n.name), ['a', 'b', 'c'])
  assert.deepEqual(nodes.nodes.map(n => n.connections), [2, 2, 2])

  // Idle, the cluster view costs one transaction per node per heartbeat (200 ms in these tests):
  // the node record (HSET) and its counts' expiry (PEXPIRE), never a PUBLISH.
  const idle0 = await redisCli(redis.port, 'INFO', 'commandstats')
  const idleStart = Date.now()
  await sleep(2000)
  const idle1 = await redisCli(redis.port, 'INFO', 'commandstats')
  const beats = (Date.now() - idleStart) / 200
  const d = cmd => calls(idle1, cmd) - calls(idle0, cmd)
  assert.equal(d('publish'), 0, 'no PUBLISH while idle')
  assert.ok(d('exec') > 0 && d('exec') <= 3 * (beats + 2), `heartbeat transactions: ${d('exec')} for 3 nodes over ${beats} beats`)
  assert.deepEqual([d('multi'), d('hset'), d('pexpire'), d('hdel')], [d('exec'), d('exec'), d('exec'), 0],
    'each heartbeat is one MULTI/EXEC holding one HSET and one PEXPIRE')
  // The bus's metric families pass Prometheus's own linter (installed by the test command).
  const text = await (await fetch(`${gws[0].admin}/metrics`)).text()
  assert.match(text, /^ringgate_bus_published_total \d+$/m)
  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  assert.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}${lint.error ?? ''}`)
  const health = await gws[2].get('/healthz')
  assert.deepEqual([health.status, health.degraded, health.bus], ['ok', false, 'up'])

  // A leave on node c stops delivery there; the others keep receiving.
  const leaver = members.find(m => m.gw === gws[2])
  await new Promise(resolve => leaver.channels[topic].leave().receive('ok', resolve))
  const leaverHad = leaver.got[topic].length
  await pushMany(members[0].channels[topic], 5, 'after-leave')
  for (let n = 0; n < 5; n++) want.push({ n, from: 'after-leave' })
  for (const m of members) {
    if (m === leaver) continue
    await expectExactly(m.got[topic], want, `member on ${m.gw.name} after the leave`)
  }
  assert.equal(leaver.got[topic].length, leaverHad, 'nothing after the leave')
  await until(async () => (await gws[1].get(`/api/topics/${encodeURIComponent(topic)}`)).cluster_subscribers === 5,
    'cluster_subscribers = 5 after the leave')
})

test('a second gateway with a live node name refuses to start', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const first = await startGateway(t, { busUrl: url, name: 'same' })
  await until(async () => (await first.get('/api/nodes')).nodes?.length === 1, 'the first node listed')
  // The admin port may answer while the name check runs; either way the process must exit
  // with a failure status.
  let code
  try {
    const second = await startGateway(t, { busUrl: url, name: 'same' })
    code = await withTimeout(second.exited, 'the second gateway to exit', 15000)
  } catch (e) {
    assert.match(e.message, /exited \(1\)/)
    code = 1
  }
  assert.equal(code, 1)
  assert.deepEqual((await first.get('/api/nodes')).nodes.map(n => n.listen), [`127.0.0.1:${first.port}`])
})

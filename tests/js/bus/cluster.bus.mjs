// Redis Cluster, 3 masters + 3 replicas, sharded pub/sub: topics spread over every shard, a
// broadcast from any of 3 gateways reaches every member exactly once; then one master is killed
// (SIGKILL) and its replica takes over: delivery on every topic resumes within seconds, and is
// exactly once again afterwards.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { client, clusterNodes, expectExactly, redisCli, sleep, startCluster, startGateway, until } from './helpers.mjs'

const TOPICS = 24

test('Redis Cluster: sharded pub/sub across 3 shards, exactly once from any gateway', async t => {
  const redis = await startCluster(t)
  const url = 'redis+cluster://' + redis.slice(0, 3).map(n => `127.0.0.1:${n.port}`).join(',')
  const gws = []
  for (const name of ['a', 'b', 'c']) gws.push(await startGateway(t, { busUrl: url, name }))
  const stamp = Date.now()
  const topics = Array.from({ length: TOPICS }, (_, i) => `rooms:c${stamp}-${i}`)
  const ms = []
  for (const gw of gws) ms.push(await client(t, gw.url, topics))

  // Every master holds some of the shard channels, each subscribed by all 3 gateways.
  const masters = (await clusterNodes(redis[0].port)).filter(n => n.role === 'master')
  assert.equal(masters.length, 3)
  const perShard = {}
  await until(async () => {
    let total = 0
    for (const m of masters) {
      const list = (await redisCli(m.port, 'PUBSUB', 'SHARDCHANNELS', `ringgate:rooms:c${stamp}-*`)).trim().split('\n').filter(Boolean)
      perShard[m.port] = list
      for (const ch of list) {
        const n = Number((await redisCli(m.port, 'PUBSUB', 'SHARDNUMSUB', ch)).trim().split('\n')[1])
        if (n === 3) total++
      }
    }
    return total === TOPICS
  }, 'every topic channel subscribed by 3 gateways', 20000)
  for (const m of masters) assert.ok(perShard[m.port].length >= 1, `shard ${m.port} holds channels: ${JSON.stringify(perShard)}`)

  async function broadcastAll (tag) {
    const from = ms.map(m => Object.fromEntries(topics.map(tp => [tp, m.got[tp].length])))
    const want = Object.fromEntries(topics.map(tp => [tp, []]))
    for (const [i, topic] of topics.entries()) {
      const gw = gws[i % 3]
      for (let n = 0; n < 3; n++) {
        const r = await gw.post('/api/broadcast', { topic, event: 'msg', payload: { n, tag } })
        assert.equal(r.httpStatus, 202)
        want[topic].push({ n, tag })
      }
    }
    for (const [j, m] of ms.entries()) {
      for (const topic of topics) {
        await expectExactly(m.got[topic].slice(from[j][topic]), want[topic], `gateway ${j} ${topic} (${tag})`, 0)
      }
    }
    await sleep(300)
    for (const [j, m] of ms.entries()) {
      for (const topic of topics) {
        assert.equal(m.got[topic].length - from[j][topic], want[topic].length, `gateway ${j} ${topic} (${tag}): nothing twice`)
      }
    }
  }
  await broadcastAll('before')

  // The cluster view's keys share one slot, so each heartbeat is one transaction on Cluster too.
  await until(async () => (await gws[0].get(`/api/topics/${encodeURIComponent(topics[0])}`)).cluster_subscribers === 3,
    'cluster_subscribers = 3 on Redis Cluster')
  assert.deepEqual((await gws[1].get('/api/nodes')).nodes.map(n => n.name), ['a', 'b', 'c'])

  // Kill the master holding the most channels; its replica is promoted (node timeout 1 s).
  const victim = masters.reduce((a, b) => (perShard[a.port].length >= perShard[b.port].length ? a : b))
  const replica = (await clusterNodes(redis[0].port)).find(n => n.masterId === victim.id)
  assert.ok(replica, `replica of ${victim.port}`)
  const proc = redis.find(n => n.port === victim.port)
  const killedAt = Date.now()
  await proc.stop('SIGKILL')
  const promoted = redis.find(n => n.port === replica.port)
  await until(async () => (await clusterNodes(replica.port)).find(n => n.id === replica.id).role === 'master',
    `replica ${replica.port} promoted`, 20000).catch(e => { throw new Error(`${e.message}\n${promoted.log().slice(-3000)}`) })

  // Probe every topic from its publishing gateway until every member has the latest probe:
  // broadcasts during the switch may be lost (pub/sub is fire-and-forget), later ones may not.
  let probe = 0
  await until(async () => {
    probe++
    for (const [i, topic] of topics.entries()) {
      await gws[i % 3].post('/api/broadcast', { topic, event: 'msg', payload: { probe } })
    }
    await sleep(300)
    return ms.every(m => topics.every(tp => m.got[tp].some(x => x.probe === probe)))
  }, 'delivery on every topic after the failover', 45000).catch(async e => {
    throw new Error(`${e.message}\n${await failoverReport(redis, gws, ms, topics, probe)}`)
  })
  console.log(`failover: delivery on all ${TOPICS} topics resumed ${Date.now() - killedAt} ms after the SIGKILL`)
  const repairs = []
  for (const gw of gws) repairs.push((await gw.metrics()).ringgate_bus_subscription_repairs_total)
  console.log(`failover: subscription repairs per gateway ${JSON.stringify(repairs)}`)
  await sleep(500)
  await broadcastAll('after')
})

/** Why a probe did not arrive: who misses it, which live node holds each missing channel for
 * how many gateways, each connection's shard subscription count, and every gateway's bus
 * counters. */
async function failoverReport (redis, gws, ms, topics, probe) {
  const missing = []
  for (const [j, m] of ms.entries()) {
    for (const tp of topics) if (!m.got[tp].some(x => x.probe === probe)) missing.push([j, tp])
  }
  const channels = [...new Set(missing.map(([, tp]) => `ringgate:${tp}`))]
  const live = []
  for (const r of redis) {
    if (r.child.exitCode === null && r.child.signalCode === null) live.push(r.port)
  }
  const nodes = (await clusterNodes(live[0])).filter(n => !n.failed && live.includes(n.port))
  const report = { missing: missing.map(([j, tp]) => `gateway ${j}: ${tp}`), numsub: {}, ssub: {}, bus: [] }
  for (const n of nodes) {
    if (channels.length) {
      const out = (await redisCli(n.port, 'PUBSUB', 'SHARDNUMSUB', ...channels)).trim().split('\n')
      report.numsub[`${n.role} ${n.port}`] = out.filter((_, i) => i % 2 === 1).join(',')
    }
    report.ssub[`${n.role} ${n.port}`] = (await redisCli(n.port, 'CLIENT', 'LIST')).trim().split('\n')
      .map(l => `${l.match(/ addr=(\S+)/)?.[1]} ${l.match(/ssub=\d+/)?.[0]}`)
  }
  for (const gw of gws) {
    const m = await gw.metrics()
    report.bus.push(Object.fromEntries(Object.entries(m).filter(([k, v]) => k.startsWith('ringgate_bus_') && v !== 0)))
  }
  return JSON.stringify(report, null, 1)
}

// Redis Cluster, 3 masters + 3 replicas, sharded pub/sub: topics spread over every shard, a
// broadcast from any of 3 gateways reaches every member exactly once, and after one master is
// killed and its replica takes over, delivery on that shard resumes.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import { client, clusterNodes, expectExactly, redisCli, sleep, startCluster, startGateway, until } from './helpers.mjs'

const TOPICS = 24

test('Redis Cluster: sharded pub/sub across 3 shards, failover of a master', async t => {
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

  const want = Object.fromEntries(topics.map(tp => [tp, []]))
  async function broadcastAll (tag) {
    for (const [i, topic] of topics.entries()) {
      const gw = gws[i % 3]
      for (let n = 0; n < 3; n++) {
        const r = await gw.post('/api/broadcast', { topic, event: 'msg', payload: { n, tag } })
        assert.equal(r.httpStatus, 202)
        want[topic].push({ n, tag })
      }
    }
    for (const [j, m] of ms.entries()) {
      for (const topic of topics) await expectExactly(m.got[topic], want[topic], `gateway ${j} ${topic} (${tag})`, 0)
    }
  }
  await broadcastAll('before')

  // Fail over: kill one master; its replica is promoted.
  const victim = masters[0]
  const replica = (await clusterNodes(redis[0].port)).find(n => n.masterId === victim.id)
  assert.ok(replica, 'the victim has a replica')
  const proc = redis.find(r => r.port === victim.port)
  await proc.stop('SIGKILL')
  const survivor = redis.find(r => r.port === replica.port)
  await until(async () => { const ns = await clusterNodes(survivor.port); if (process.env.BUS_DEBUG) console.log(JSON.stringify(ns)); return ns.find(n => n.port === replica.port)?.role === 'master' },
    'the replica to be promoted', 20000)
  await until(async () => (await redisCli(survivor.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 'cluster ok', 20000)

  // Delivery resumes on the moved shard: probe every topic until a broadcast from a crosses to
  // b and c, then check exactly-once for a full round.
  const probe = topics.find(tp => perShard[victim.port].includes(`ringgate:${tp}`))
  const seen = []
  ms[1].channels[probe].on('probe', p => seen.push(p.id))
  const started = Date.now()
  let id = 0
  await until(async () => {
    id++
    await gws[0].post('/api/broadcast', { topic: probe, event: 'probe', payload: { id } })
    const mine = id
    for (let i = 0; i < 10 && !seen.includes(mine); i++) await sleep(50)
    return seen.includes(mine)
  }, 'delivery on the failed-over shard to resume', 30000)
  console.log(`# delivery resumed ${Date.now() - started} ms after the replica took over`)
  await broadcastAll('after')
})

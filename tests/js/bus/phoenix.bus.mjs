// ringgate in a Phoenix app's PubSub (`[bus] format = "phoenix"`): two gateways join the
// PubSub "MyApp.PubSub" over a real redis-server, and real Erlang stands in for the Elixir
// nodes. An escript publishes the exact message phoenix_pubsub_redis 3.x publishes for
// `Endpoint.broadcast/3` (term_to_binary of {3, :except, node, topic, %Phoenix.Socket.Broadcast{},
// Phoenix.Channel.Server}, plain and compressed) with a raw RESP PUBLISH; official phoenix.js
// clients on both gateways receive the JSON Phoenix would have sent. The reverse: a client push
// and POST /api/broadcast through ringgate are read from Redis by an escript (SUBSCRIBE,
// binary_to_term) and checked field by field.

import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { test } from 'node:test'
import { fileURLToPath } from 'node:url'

import WebSocket from 'ws'

import { client, expectExactly, numsub, sleep, startGateway, startRedis, until, withTimeout } from './helpers.mjs'

const CHANNEL = 'phx:Elixir.MyApp.PubSub.Adapter'
const PUBLISH = fileURLToPath(new URL('./erl/redis_publish.escript', import.meta.url))
const SUBSCRIBE = fileURLToPath(new URL('./erl/redis_subscribe.escript', import.meta.url))
const PHOENIX = ['--bus-format', 'phoenix', '--bus-phoenix-pubsub', 'MyApp.PubSub']

/** Publishes the Erlang term `termText` on the adapter's channel; resolves with the receivers. */
function erlPublish (port, termText, level = 0) {
  return new Promise((resolve, reject) => {
    execFile('escript', [PUBLISH, String(port), CHANNEL, termText, String(level)], { timeout: 20000 },
      (err, stdout, stderr) => err ? reject(new Error(`escript publish: ${stderr || err.message}`)) : resolve(Number(stdout.trim())))
  })
}

/** The adapter's message for Endpoint.broadcast(topic, event, payload) on Elixir node `node`. */
function broadcastTerm (topic, event, payload, { node = "'elixir@app'", mode = 'except', dispatcher = "'Elixir.Phoenix.Channel.Server'" } = {}) {
  return `{3, ${mode}, ${node}, <<"${topic}">>, #{'__struct__' => 'Elixir.Phoenix.Socket.Broadcast', ` +
    `topic => <<"${topic}">>, event => <<"${event}">>, payload => ${payload}}, ${dispatcher}}`
}

/** Erlang-typed JSON from redis_subscribe.escript → plain values with the types kept as tags. */
function fromErl (x) {
  if (typeof x === 'number') return x
  if (Array.isArray(x)) return x.map(fromErl)
  if ('atom' in x) return { atom: Buffer.from(x.atom, 'base64').toString('utf8') }
  if ('bin' in x) return Buffer.from(x.bin, 'base64').toString('utf8')
  if ('float' in x) return { float: Number(x.float) }
  if ('tuple' in x) return { tuple: x.tuple.map(fromErl) }
  if ('map' in x) {
    const out = {}
    for (const [k, v] of x.map) {
      const key = fromErl(k)
      out[typeof key === 'string' ? key : `atom:${key.atom}`] = fromErl(v)
    }
    return out
  }
  throw new Error(`unexpected term ${JSON.stringify(x)}`)
}

// The payload an Elixir app broadcasts: atom and string keys, nested maps, lists, unicode
// strings, integers (a big one), floats, nil/true/false.
const PAYLOAD = "#{body => <<\"h\\x{e9}llo w\\x{f6}rld \\x{1F600} \\x{4e16}\\x{754c}\"/utf8>>, " +
  "user => #{name => <<\"Ada\">>, id => 42, roles => [admin, <<\"dev\">>]}, n => -7, " +
  'big => 12345678901234567890, f => 2.5, tiny => 1.0e-7, none => nil, yes => true, no => false, ' +
  "list => [1, 2.0, <<\"x\">>, nil, #{k => []}], <<\"str_key\">> => 1}"
// What Jason writes for it (atom keys sorted, then string keys; floats as Erlang prints them).
const PAYLOAD_JSON = '{"big":12345678901234567890,"body":"héllo wörld 😀 世界","f":2.5,' +
  '"list":[1,2.0,"x",null,{"k":[]}],"n":-7,"no":false,"none":null,"tiny":1.0e-7,' +
  '"user":{"id":42,"name":"Ada","roles":["admin","dev"]},"yes":true,"str_key":1}'

/** A raw WebSocket (V2) joined to `topic`: records every text frame as it arrived. */
async function rawMember (t, url, topic) {
  const ws = new WebSocket(`${url}/websocket?vsn=2.0.0`)
  t.after(() => ws.terminate())
  const frames = []
  ws.on('message', (data, isBinary) => frames.push(isBinary ? data : data.toString('utf8')))
  await withTimeout(new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }), 'raw socket open')
  ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]))
  await until(() => frames.some(f => typeof f === 'string' && f.includes('"phx_reply"')), 'raw join reply')
  frames.length = 0
  return frames
}

test('Phoenix → ringgate: Endpoint.broadcast from Erlang reaches phoenix.js clients on two gateways', async t => {
  const redis = await startRedis(t)
  const busUrl = `redis://127.0.0.1:${redis.port}`
  const a = await startGateway(t, { busUrl, name: 'rg-a', args: PHOENIX })
  const b = await startGateway(t, { busUrl, name: 'rg-b', args: PHOENIX })
  const topic = 'rooms:phx'
  const ca = await client(t, a.url, [topic], { event: 'new_msg' })
  const cb = await client(t, b.url, [topic], { event: 'new_msg' })
  const raw = await rawMember(t, b.url, topic)
  const bins = []
  cb.channels[topic].on('bin_msg', payload => bins.push(Buffer.from(payload)))
  // One subscription per node, on the one channel of the PubSub, whatever the topics.
  await until(async () => await numsub(redis.port, CHANNEL) === 2, 'both gateways on the adapter channel')
  assert.equal(await numsub(redis.port, `ringgate:${topic}`), 0, 'no per-topic channel')

  const second = "#{text => binary:copy(<<\"ringgate \">>, 100), seq => 2}"
  assert.equal(await erlPublish(redis.port, broadcastTerm(topic, 'new_msg', PAYLOAD)), 2)
  // Not for the clients: other PubSub traffic, a payload JSON cannot carry, a direct broadcast
  // to another node, a topic nobody here joined.
  await erlPublish(redis.port, `{3, except, 'elixir@app', <<"${topic}">>, {user_joined, 42}, 'Elixir.Phoenix.PubSub'}`)
  await erlPublish(redis.port, broadcastTerm(topic, 'new_msg', '#{owner => self()}'))
  await erlPublish(redis.port, broadcastTerm(topic, 'new_msg', '#{x => 1}', { mode: 'only', node: "'other@app'" }))
  await erlPublish(redis.port, broadcastTerm('rooms:nobody', 'new_msg', '#{x => 1}'))
  // Compressed (the adapter's compression_level), and a binary payload.
  await erlPublish(redis.port, broadcastTerm(topic, 'new_msg', second), 6)
  await erlPublish(redis.port, broadcastTerm(topic, 'bin_msg', '{binary, <<0, 1, 2, 255>>}'))

  const want = [JSON.parse(PAYLOAD_JSON), { seq: 2, text: 'ringgate '.repeat(100) }]
  await expectExactly(ca.got[topic], want, 'phoenix.js on gateway a')
  await expectExactly(cb.got[topic], want, 'phoenix.js on gateway b')
  await until(() => bins.length === 1, 'the binary broadcast')
  assert.deepEqual([...bins[0]], [0, 1, 2, 255])
  // Byte for byte what Phoenix's V2 serializer sends for the first one.
  const texts = raw.filter(f => typeof f === 'string')
  assert.equal(texts[0], `[null,null,"${topic}","new_msg",${PAYLOAD_JSON}]`)

  // Each gateway reads the channel on its own: wait (bounded) until both have counted the last
  // message, then the counts must be exactly these.
  const counts = m => [
    m['ringgate_bus_ignored_total{reason="not_a_broadcast"}'],
    m['ringgate_bus_ignored_total{reason="other_node"}'],
    m['ringgate_bus_ignored_total{reason="no_members"}'],
    m['ringgate_bus_unsupported_total{reason="pid"}'],
    m.ringgate_bus_delivered_total,
    m.ringgate_bus_subscribed_channels
  ].join()
  for (const gw of [a, b]) {
    await until(async () => {
      const now = counts(await gw.metrics())
      if (now !== '1,1,1,1,3,1') throw new Error(`counts ${now}`)
      return true
    }, `bus counts on ${gw.name} (ignored not_a_broadcast, other_node, no_members; unsupported pid; delivered; channels) = 1,1,1,1,3,1`)
  }
})

test('ringgate → Phoenix: a client push and POST /api/broadcast arrive as the adapter\'s %Broadcast{} tuple', async t => {
  const redis = await startRedis(t)
  const busUrl = `redis://127.0.0.1:${redis.port}`
  const a = await startGateway(t, { busUrl, name: 'rg-a', args: PHOENIX })
  const b = await startGateway(t, { busUrl, name: 'rg-b', args: PHOENIX })
  const topic = 'rooms:from-ringgate'
  const ca = await client(t, a.url, [topic], { event: 'new_msg' })
  const cb = await client(t, b.url, [topic], { event: 'new_msg' })

  const sub = spawn('escript', [SUBSCRIBE, String(redis.port), CHANNEL, '2'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise(resolve => sub.once('exit', resolve))
  t.after(async () => { if (sub.exitCode === null) sub.kill('SIGKILL'); await withTimeout(exited, 'escript to exit', 10000) })
  let out = ''
  sub.stdout.on('data', d => { out += d })
  await until(() => out.includes('subscribed\n'), 'escript subscribed')
  await until(async () => await numsub(redis.port, CHANNEL) === 3, 'escript and both gateways on the channel')

  const pushed = { body: 'hé 😀', n: [1, -1, 2.5, null, true], nested: { k: 'v' } }
  await withTimeout(new Promise((resolve, reject) =>
    ca.channels[topic].push('new_msg', pushed).receive('ok', resolve).receive('error', reject)), 'push')
  const posted = { from: 'api', big: 4294967296 }
  const r = await b.post('/api/broadcast', { topic, event: 'new_msg', payload: posted })
  assert.equal(r.httpStatus, 202)
  // Each reaches the other gateway's client through the PubSub too (the two may arrive in
  // either order: one is local, the other crossed Redis).
  // (deepEqual ignores key order: through the PubSub a payload is an Erlang map, whose keys come
  // back in Erlang's order.)
  const sorted = list => [...list].sort((x, y) => ('from' in x) - ('from' in y))
  for (const [name, c] of [['a', ca], ['b', cb]]) {
    await until(() => c.got[topic].length >= 2, `gateway ${name} client: the push and the post`)
    await sleep(300)
    assert.deepEqual(sorted(c.got[topic]), sorted([pushed, posted]), `gateway ${name} client`)
  }

  await withTimeout(exited, 'escript to read 2 messages', 15000)
  const msgs = out.split('\n').filter(l => l.startsWith('{') || l.startsWith('[')).map(l => fromErl(JSON.parse(l)))
  assert.equal(msgs.length, 2)
  const byNode = Object.fromEntries(msgs.map(m => [m.tuple[2], m.tuple]))
  for (const [node, payload] of [['rg-a', { body: 'hé 😀', n: [1, -1, { float: 2.5 }, { atom: 'nil' }, { atom: 'true' }], nested: { k: 'v' } }],
    ['rg-b', { from: 'api', big: 4294967296 }]]) {
    const [version, mode, from, tpc, message, dispatcher] = byNode[node]
    assert.equal(version, 3, 'adapter message version')
    assert.deepEqual(mode, { atom: 'except' }, 'mode')
    assert.equal(from, node, 'node name (a binary)')
    assert.equal(tpc, topic, 'PubSub topic')
    assert.deepEqual(message['atom:__struct__'], { atom: 'Elixir.Phoenix.Socket.Broadcast' })
    assert.equal(message['atom:topic'], topic)
    assert.equal(message['atom:event'], 'new_msg')
    assert.deepEqual(message['atom:payload'], payload, `payload from ${node}`)
    assert.deepEqual(Object.keys(message).sort(), ['atom:__struct__', 'atom:event', 'atom:payload', 'atom:topic'])
    assert.deepEqual(dispatcher, { atom: 'Elixir.Phoenix.Channel.Server' })
  }
  // Each gateway dropped its own echo.
  for (const gw of [a, b]) {
    await until(async () => {
      const echoes = (await gw.metrics())['ringgate_bus_ignored_total{reason="echo"}']
      if (echoes !== 1) throw new Error(`echoes dropped: ${echoes}`)
      return true
    }, `one echo dropped on ${gw.name}`)
  }
})

// Behind HAProxy (deploy/haproxy.cfg, rendered with this test's ports): 3 gateways on one Redis,
// phoenix.js clients connect through the balancer; one gateway is drained (POST /api/drain, close
// 1012 spread over drain_ms); its clients reconnect through the balancer to the others, rejoin,
// and receive the next broadcasts, published on any node.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'

import { client, freePort, sleep, startGateway, startRedis, until, withTimeout } from './helpers.mjs'

async function startHaproxy (t, gws) {
  const port = await freePort()
  let cfg = readFileSync(new URL('../../../deploy/haproxy.cfg', import.meta.url), 'utf8')
  cfg = cfg.replace(/bind 127\.0\.0\.1:8080/, `bind 127.0.0.1:${port}`)
    .replace(/^\s*server .*$\n?/gm, '')
    .replace(/^\s*log stdout.*$\n?/m, '')
    // The shipped maxconn needs a raised descriptor limit; this box caps it at 20000.
    .replace(/maxconn \d+/, 'maxconn 2000')
  cfg += gws.map((gw, i) => `    server gw${i} 127.0.0.1:${gw.port} check port ${new URL(gw.admin).port}\n`).join('')
  const dir = mkdtempSync(join(tmpdir(), 'ringgate-haproxy-'))
  const file = join(dir, 'haproxy.cfg')
  writeFileSync(file, cfg)
  const child = spawn('haproxy', ['-f', file, '-db'], { stdio: ['ignore', 'ignore', 'inherit'] })
  const exited = new Promise(resolve => child.once('exit', resolve))
  t.after(async () => {
    if (child.exitCode === null) child.kill('SIGKILL')
    await withTimeout(exited, 'haproxy to exit', 10000)
    rmSync(dir, { recursive: true, force: true })
  })
  await until(() => new Promise(resolve => {
    const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
    s.on('error', () => resolve(false))
  }), `haproxy listening on ${port}`)
  return { port, url: `ws://127.0.0.1:${port}/socket` }
}

test('drain one gateway behind HAProxy: its clients move to the others and keep receiving', async t => {
  const redis = await startRedis(t)
  const url = `redis://127.0.0.1:${redis.port}`
  const gws = []
  for (const name of ['a', 'b', 'c']) {
    gws.push(await startGateway(t, { busUrl: url, name, args: ['--drain-ms', '1000'] }))
  }
  const lb = await startHaproxy(t, gws)
  const topic = `rooms:lb-${Date.now()}`
  const clients = []
  for (let i = 0; i < 9; i++) clients.push(await client(t, lb.url, [topic], { reconnect: true }))
  // leastconn spreads them: every gateway holds some.
  const perNode = async () => Promise.all(gws.slice(0, 3).map(async gw => (await gw.get(`/api/topics/${encodeURIComponent(topic)}`)).subscribers))
  await until(async () => (await perNode()).reduce((a, b) => a + b, 0) === 9, '9 subscribers over the gateways')
  const spread = await perNode()
  assert.ok(spread.every(n => n > 0), `leastconn spread: ${spread}`)

  const closes = []
  for (const c of clients) c.socket.onClose(e => closes.push(e.code))
  const r = await gws[0].post('/api/drain', {})
  assert.equal(r.httpStatus, 202)
  assert.equal(await withTimeout(gws[0].exited, 'gateway a to exit after draining', 15000), 0)
  assert.equal(closes.filter(c => c === 1012).length, spread[0], `1012 closes for a's clients: ${closes}`)

  // Every client is joined again, on b or c.
  await until(async () => {
    const [, b, c] = await Promise.all([0, ...gws.slice(1).map(async gw => (await gw.get(`/api/topics/${encodeURIComponent(topic)}`)).subscribers)])
    return b + c === 9 && clients.every(c => c.channels[topic].state === 'joined')
  }, 'all 9 clients rejoined through the balancer', 20000)

  const before = clients.map(c => c.got[topic].length)
  for (const [i, gw] of gws.slice(1).entries()) {
    await gw.post('/api/broadcast', { topic, event: 'msg', payload: { after: i } })
  }
  for (const [j, c] of clients.entries()) {
    await until(() => c.got[topic].length >= before[j] + 2, `client ${j}: both broadcasts after the drain`)
  }
  await sleep(300)
  // Exactly once each. The two were published by different nodes, and order is promised per
  // publisher only: a client on c may see c's own broadcast before b's has crossed Redis.
  for (const [j, c] of clients.entries()) {
    const got = c.got[topic].slice(before[j]).map(m => m.after).sort()
    assert.deepEqual(got, [0, 1], `client ${j} after the drain`)
  }
})

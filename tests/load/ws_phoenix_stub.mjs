// A peer server for `ringgate load` figures (docs/load-testing.md): Node `ws` answering Phoenix
// V1 joins with an ok reply, so the `seed` scenario runs against something that is not ringgate.
// Usage: node tests/load/ws_phoenix_stub.mjs PORT   (needs `npm ci --prefix tests/js` for `ws`)
import { createRequire } from 'node:module';
const require = createRequire(new URL('../js/package.json', import.meta.url));
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 4800);
const wss = new WebSocketServer({ port, host: '127.0.0.1', backlog: 4096, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.event === 'phx_join') {
      ws.send(JSON.stringify({ topic: msg.topic, event: 'phx_reply', payload: { status: 'ok', response: {} }, ref: msg.ref }));
    }
  });
});
wss.on('listening', () => console.log(`ws phoenix stub on 127.0.0.1:${port}`));

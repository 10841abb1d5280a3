// The seed's chat app on the official phoenix.js (vendored browser build): joins rooms:lobby on
// load over the browser's own WebSocket, pushes "new_msg" {user, body}, shows every "new_msg"
// broadcast, and the people in the room when the server sends presence_state / presence_diff
// (handled by phoenix.js's own Presence class).
'use strict';
(() => {
  const TOPIC = 'rooms:lobby';
  const $ = id => document.getElementById(id);
  const meta = name => document.querySelector(`meta[name="${name}"]`).content;

  const nameInput = $('name');
  nameInput.value = `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  const name = () => nameInput.value.trim() || 'guest';

  function status (cls, text) {
    $('status').className = 'status ' + cls;
    $('status').textContent = text;
  }
  function line (cls, who, body) {
    const li = document.createElement('li');
    if (cls) li.className = cls;
    if (who !== null) {
      const w = document.createElement('span'); w.className = 'who'; w.textContent = who; li.append(w);
    }
    li.append(document.createTextNode(body));
    const when = document.createElement('span');
    when.className = 'when';
    when.textContent = new Date().toLocaleTimeString();
    li.append(when);
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(li);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  const socketPath = meta('ringgate-socket-path');
  if (!socketPath) {
    status('error', 'unreachable');
    line('system', null, `The gateway's phoenix_path (${meta('ringgate-phoenix-path')}) does not end in /websocket, which phoenix.js needs.`);
    return;
  }
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const endpoint = `${scheme}://${location.hostname}:${meta('ringgate-port')}${socketPath}`;
  // The browser's native WebSocket (phoenix.js's default transport); long-poll is never used.
  const socket = new Phoenix.Socket(endpoint, { transport: WebSocket, longPollFallbackMs: null });
  socket.onOpen(() => status('live', 'connected'));
  socket.onError(() => status('error', 'reconnecting'));
  socket.onClose(() => status('error', 'disconnected'));
  socket.connect();

  const channel = socket.channel(TOPIC, () => ({ user: name() }));
  channel.on('new_msg', msg => {
    const who = typeof msg.user === 'string' ? msg.user : 'someone';
    const body = typeof msg.body === 'string' ? msg.body : JSON.stringify(msg);
    line(who === name() ? 'mine' : '', who, body);
  });

  // Presence, once the server sends it: the client's Presence class keeps the list in sync.
  const presence = new Phoenix.Presence(channel);
  presence.onSync(() => {
    const people = presence.list((id, { metas }) => {
      const m = metas && metas[0];
      return (m && (m.user || m.name)) || id;
    });
    $('people').hidden = false;
    $('people-count').textContent = String(people.length);
    $('people-list').replaceChildren(...people.map(p => {
      const li = document.createElement('li'); li.textContent = p; return li;
    }));
  });

  channel.join()
    .receive('ok', () => {
      status('live', 'joined');
      if (!document.body.dataset.joined) {
        line('system', null, `Joined ${TOPIC}. Open this page in another tab or browser to chat with yourself.`);
      }
      document.body.dataset.joined = 'true';
    })
    .receive('error', r => { status('error', 'join refused'); line('system', null, `join refused: ${JSON.stringify(r)}`) })
    .receive('timeout', () => status('error', 'join timed out'));

  $('send').addEventListener('submit', ev => {
    ev.preventDefault();
    const input = $('body');
    const body = input.value.trim();
    if (!body) return;
    channel.push('new_msg', { user: name(), body })
      .receive('error', r => line('system', null, `not sent: ${JSON.stringify(r)}`))
      .receive('timeout', () => line('system', null, 'not sent: timed out'));
    input.value = '';
    input.focus();
  });
})();

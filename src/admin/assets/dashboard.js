// ringgate live dashboard: polls GET /api/stats once a second and draws the last five minutes.
// A poll (not SSE) so that the admin API key can travel as an Authorization header: EventSource
// cannot send headers, and a key never goes into a URL. The key the user types is kept in
// sessionStorage (this tab only, gone when it closes).
'use strict';
(() => {
  const POLL_MS = 1000;
  const WINDOW = 300; // points kept per chart: five minutes at one a second
  const LATENCY_WINDOW = 10; // polls the p99 is taken over
  const KEY_STORE = 'ringgate-admin-key';
  const COLORS = ['#4fb3ff', '#3fb950', '#d29922', '#f778ba', '#a371f7', '#ff7b72', '#79c0ff', '#56d364'];

  const $ = id => document.getElementById(id);
  const int = n => (n == null || Number.isNaN(n)) ? '–' : Math.round(n).toLocaleString('en-US');
  const rate = n => (n == null || Number.isNaN(n)) ? '–'
    : (n < 10 && n !== 0 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));
  function bytes (n) {
    if (n == null || Number.isNaN(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
    return (i === 0 ? Math.round(n) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + units[i];
  }
  function duration (us) {
    if (us == null) return '–';
    if (us < 1000) return us.toFixed(us < 10 && us % 1 ? 1 : 0) + ' µs';
    if (us < 1e6) return (us / 1000).toFixed(us < 1e4 ? 2 : 1) + ' ms';
    return (us / 1e6).toFixed(2) + ' s';
  }
  function uptime (s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400); const h = Math.floor(s / 3600) % 24; const m = Math.floor(s / 60) % 60;
    return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
  }
  const setText = (id, text) => { const el = $(id); if (el && el.textContent !== text) el.textContent = text };

  // ------------------------------------------------------------------ charts
  const charts = {};
  // Whole-number tick steps for charts of counts and bytes (no "1 B, 1 B" from 0.5-steps).
  const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5,
    1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9, 1e10, 1e11, 1e12];
  function makeChart (id, series, fmt, whole = false) {
    const el = $(id);
    const data = [[], ...series.map(() => [])];
    const opts = {
      width: Math.max(200, el.clientWidth), height: 150,
      cursor: { drag: { x: false, y: false } },
      legend: { live: false },
      scales: {
        // At least a minute wide, so the first points do not stretch the axis over years.
        x: { time: true, range: (u, min, max) => [Math.min(min ?? Date.now() / 1000, (max ?? Date.now() / 1000) - 60), max ?? Date.now() / 1000] },
        y: { range: (u, min, max) => [0, whole ? Math.max(4, Math.ceil(max * 1.1)) : (max > 0 ? max * 1.1 : 1)] }
      },
      axes: [
        { stroke: '#8b9bab', font: '11px system-ui, sans-serif', grid: { stroke: '#263241' }, ticks: { stroke: '#263241' } },
        { stroke: '#8b9bab', font: '11px system-ui, sans-serif', grid: { stroke: '#263241' }, ticks: { stroke: '#263241' },
          size: 74, ...(whole ? { incrs: WHOLE } : {}), values: (u, vals) => vals.map(v => fmt(v)) }
      ],
      series: [{}, ...series.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: i === 0 ? 2 : 1.25, points: { show: false },
        value: (u, v) => v == null ? '–' : fmt(v)
      }))]
    };
    const plot = new uPlot(opts, data, el);
    const chart = { plot, data, series };
    new ResizeObserver(() => plot.setSize({ width: Math.max(200, el.clientWidth), height: 150 })).observe(el);
    charts[id] = chart;
    return chart;
  }
  function push (id, t, values) {
    const c = charts[id];
    c.data[0].push(t);
    values.forEach((v, i) => c.data[i + 1].push(v));
    if (c.data[0].length > WINDOW) c.data.forEach(a => a.shift());
    c.plot.setData(c.data);
  }

  const plain = v => int(v);
  makeChart('c-connects', ['connects/s', 'closes/s'], rate);
  makeChart('c-joins', ['memberships', 'joins/s'], plain, true);
  makeChart('c-broadcasts', ['broadcasts/s'], rate);
  makeChart('c-deliveries', ['deliveries/s'], rate);
  makeChart('c-latency', ['p99', 'mean'], v => duration(v));
  makeChart('c-memory', ['user/conn', 'kernel/socket est.'], bytes, true);
  makeChart('c-sendq', ['send-queue bytes'], bytes, true);
  makeChart('c-pressure', ['slow-consumer closes', 'memory pauses'], plain, true);
  let connWorkers = -1; // the connections chart is rebuilt when the worker count changes

  // ------------------------------------------------------------ the API key
  function key () { return sessionStorage.getItem(KEY_STORE) }
  function showKeyForm (why) {
    setText('key-why', why);
    $('keyform').hidden = false;
    $('key').focus();
  }
  $('keyform').addEventListener('submit', ev => {
    ev.preventDefault();
    const k = $('key').value.trim();
    if (k) sessionStorage.setItem(KEY_STORE, k); else sessionStorage.removeItem(KEY_STORE);
    $('key').value = '';
    $('keyform').hidden = true;
    poll();
  });
  $('key-forget').addEventListener('click', () => { sessionStorage.removeItem(KEY_STORE); $('key').value = '' });
  $('key-open').addEventListener('click', () => {
    if ($('keyform').hidden) showKeyForm('Admin API key for this tab (kept in sessionStorage, sent as a header).');
    else $('keyform').hidden = true;
  });

  // ------------------------------------------------------------ generic sections
  function flatten (value, prefix, out) {
    if (out.length >= 64) return out;
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
    } else if (Array.isArray(value) && value.some(v => v !== null && typeof v === 'object')) {
      value.forEach((v, i) => flatten(v, `${prefix}[${i}]`, out));
    } else {
      const shown = typeof value === 'number' ? (Number.isInteger(value) ? int(value) : value.toFixed(3))
        : Array.isArray(value) ? value.join(', ') : String(value);
      out.push([prefix, shown]);
    }
    return out;
  }
  function renderSection (name, value) {
    const card = $(`${name}-card`);
    if (value === undefined || value === null) { card.hidden = true; return }
    card.hidden = false;
    const dl = $(name);
    const rows = flatten(value, '', []);
    dl.replaceChildren(...rows.flatMap(([k, v]) => {
      const dt = document.createElement('dt'); dt.textContent = k || name;
      const dd = document.createElement('dd'); dd.textContent = v;
      return [dt, dd];
    }));
  }

  // ------------------------------------------------------------------ polling
  let prev = null; // { t, s } of the previous poll
  const latencyHistory = []; // summary.delivery_latency of recent polls
  let inFlight = false;

  function perSecond (now, before, dt) {
    if (before == null || now < before || dt <= 0) return null; // restart: no rate
    return (now - before) / dt;
  }

  function p99 (bounds) {
    if (latencyHistory.length < 2) return { p99: null, mean: null };
    const a = latencyHistory[0]; const b = latencyHistory[latencyHistory.length - 1];
    const count = b.count - a.count;
    if (count <= 0) return { p99: null, mean: null };
    const want = Math.ceil(count * 0.99);
    let cum = 0;
    for (let i = 0; i < b.buckets.length; i++) {
      cum += b.buckets[i] - (a.buckets[i] || 0);
      if (cum >= want) return { p99: i < bounds.length ? bounds[i] : Infinity, mean: (b.sum_us - a.sum_us) / count };
    }
    return { p99: Infinity, mean: (b.sum_us - a.sum_us) / count };
  }

  function render (s) {
    const t = Date.now() / 1000;
    const sum = s.summary;
    const dt = prev ? t - prev.t : 0;
    const ps = prev ? prev.s.summary : null;
    const r = field => ps ? perSecond(sum[field], ps[field], dt) : null;

    setText('meta', `v${s.process.version} · up ${uptime(s.process.uptime_seconds)} · ${s.workers.length} workers · refreshed every second`);
    // connections: total and one line per worker
    if (connWorkers !== s.workers.length) {
      if (charts['c-connections']) { charts['c-connections'].plot.destroy(); $('c-connections').replaceChildren() }
      makeChart('c-connections', ['total', ...s.workers.map(w => `worker ${w.worker}`)], plain, true);
      connWorkers = s.workers.length;
    }
    push('c-connections', t, [sum.connections, ...s.workers.map(w => w.connections)]);
    setText('v-connections', int(sum.connections));
    setText('v-open', int(sum.open));
    setText('v-handshaking', int(sum.handshaking));

    const connects = r('accepted');
    push('c-connects', t, [connects, r('closed')]);
    setText('v-connects-rate', rate(connects));
    setText('v-accepted', int(sum.accepted));
    setText('v-closed', int(sum.closed));

    const joins = r('joins');
    push('c-joins', t, [sum.memberships, joins]);
    setText('v-memberships', int(sum.memberships));
    setText('v-joins-rate', rate(joins));
    setText('v-joins', int(sum.joins));
    setText('v-topics', int(s.topics));

    const bc = r('broadcasts');
    push('c-broadcasts', t, [bc]);
    setText('v-broadcasts-rate', rate(bc));
    setText('v-broadcasts', int(sum.broadcasts));
    setText('v-admin-broadcasts', int(s.admin ? s.admin.broadcasts : null));

    const dl = r('deliveries');
    push('c-deliveries', t, [dl]);
    setText('v-deliveries-rate', rate(dl));
    setText('v-deliveries', int(sum.deliveries));
    setText('v-dropped', int(sum.deliveries_dropped));

    latencyHistory.push(sum.delivery_latency);
    if (latencyHistory.length > LATENCY_WINDOW + 1) latencyHistory.shift();
    const lat = p99(sum.delivery_latency.bounds_us);
    const p99Text = lat.p99 == null ? '–' : lat.p99 === Infinity ? '> 5 s' : '≤ ' + duration(lat.p99);
    setText('v-latency-p99', lat.p99 == null ? 'no deliveries' : p99Text);
    setText('v-latency-mean', duration(lat.mean));
    push('c-latency', t, [lat.p99 === Infinity ? null : lat.p99, lat.mean]);

    const kernel = sum.kernel_bytes_per_connection_estimate;
    push('c-memory', t, [sum.connections ? sum.user_bytes_per_connection : null, kernel]);
    setText('v-user-bytes', sum.connections ? bytes(sum.user_bytes_per_connection) : '–');
    setText('v-kernel-bytes', kernel == null ? 'n/a' : bytes(kernel));
    setText('v-accounted', bytes(sum.accounted_bytes));
    setText('v-rss', bytes(s.process.resident_bytes));

    push('c-sendq', t, [sum.send_queue_bytes]);
    setText('v-sendq', bytes(sum.send_queue_bytes));

    push('c-pressure', t, [sum.slow_consumer_closes, sum.memory_pauses]);
    setText('v-slow', int(sum.slow_consumer_closes));
    setText('v-pauses', int(sum.memory_pauses));

    const tbody = $('workers').tBodies[0];
    tbody.replaceChildren(...s.workers.map(w => {
      const tr = document.createElement('tr');
      for (const v of [w.worker, int(w.connections), int(w.open), int(w.handshaking), int(w.stats.accepted),
        int(w.stats.joins), int(w.memory.memberships), int(w.memory.topics), int(w.stats.deliveries),
        bytes(w.memory.send_queue_bytes), int(w.stats.send_queue_overflows)]) {
        const td = document.createElement('td'); td.textContent = String(v); tr.append(td);
      }
      return tr;
    }));
    renderSection('bus', s.bus);
    renderSection('presence', s.presence);
    prev = { t, s };
  }

  function status (cls, text) {
    const el = $('status');
    el.className = 'status ' + cls;
    setText('status', text);
  }

  async function poll () {
    if (inFlight) return;
    inFlight = true;
    try {
      const headers = { Accept: 'application/json' };
      const k = key();
      if (k) headers.Authorization = 'Bearer ' + k;
      const res = await fetch('/api/stats', { headers, cache: 'no-store' });
      if (res.status === 401) {
        status('error', 'key needed');
        setText('meta', 'waiting for the admin API key');
        if ($('keyform').hidden) {
          showKeyForm(k ? 'The admin API refused this key: type the right one.'
            : 'This gateway requires its admin API key to show statistics.');
        }
        return;
      }
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      render(await res.json());
      status('live', 'live');
    } catch (e) {
      status('error', 'unreachable');
      prev = null;
    } finally {
      inFlight = false;
    }
  }
  poll();
  setInterval(poll, POLL_MS);
})();

#!/usr/bin/env bash
# The cost of observing: `/metrics` and `/api/stats` response times at N joined idle connections,
# and broadcast deliveries/s with the live dashboard open vs closed, in alternating phases of one
# run (benches/observe/cost.mjs). Results: OUTDIR/observe.json; docs/performance.md has the figures.
#
#   benches/observe.sh [USERS] [OUTDIR]        (default 100000, target/observe)
#
# Needs a release build, `npm ci --prefix tests/browser` (playwright-core, ws) and /usr/bin/chromium.
# Bounded: the load runs for a fixed time; every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
USERS=${1:-100000}
OUT=${2:-target/observe}
RATE=${RATE:-5000}
# One ring holds at most the soft RLIMIT_NOFILE (20,000 here); SO_REUSEPORT spreads by hash: ~20% headroom.
WORKERS=${WORKERS:-$(( (USERS * 12 / 10 + 19999) / 20000 ))}
PROCS=${PROCS:-$(( (USERS + 17999) / 18000 ))}
HOLD_S=${HOLD_S:-600}
BIN=target/release/ringgate
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); ADMIN=$(free_port)

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --workers "$WORKERS" \
    --max-connections-per-worker 20000 --idle-timeout-ms 3600000 --listen-backlog 65535 \
    --max-handshakes-per-worker 65535 --log-level warn >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done

"$BIN" load --url "ws://127.0.0.1:$PORT/socket/websocket" --scenario phoenix-idle --users "$USERS" \
    --arrival-rate "$RATE" --duration "$HOLD_S" --procs "$PROCS" \
    --connect-timeout-ms 30000 --quiet --out "$OUT/load" >"$OUT/load.log" 2>&1 &
LOAD=$!; PIDS+=("$LOAD")

open_now() { curl -s "http://127.0.0.1:$ADMIN/api/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["memberships"])'; }
deadline=$(( $(date +%s) + USERS / RATE * 3 + 90 ))
open=0
while (( $(date +%s) < deadline )); do
    open=$(open_now || echo 0)
    (( open >= USERS )) && break
    kill -0 "$LOAD" 2>/dev/null || { echo "load exited early: see $OUT/load.log"; exit 1; }
    sleep 2
done
echo "joined members: $open of $USERS ($WORKERS workers, $PROCS load processes)"
(( open >= USERS )) || { echo "not every user joined"; exit 1; }
sleep 5
GATEWAY_PID=$GW node benches/observe/cost.mjs "http://127.0.0.1:$ADMIN" "ws://127.0.0.1:$PORT/socket/websocket" "$open" "$OUT/observe.json"
python3 - "$OUT/observe.json" "$WORKERS" "$(git rev-parse --short HEAD)" "$(cat /proc/loadavg)" <<'PY'
import json, sys
path, workers, commit, load = sys.argv[1:]
r = json.load(open(path))
r.update(workers=int(workers), commit=commit, loadavg_at_end=load)
json.dump(r, open(path, "w"), indent=2)
print(json.dumps({k: r[k] for k in ("members", "workers", "commit", "metrics", "api_stats", "closed", "open", "open_over_closed")}, indent=1))
PY

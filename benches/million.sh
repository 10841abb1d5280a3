#!/usr/bin/env bash
# The run that answers the talk: one `ringgate serve` and `ringgate load` on this box hold N idle
# joined connections (default 1,000,000), then one broadcast goes to all of them.
#
#   benches/million.sh [USERS] [OUTDIR]
#
# SERVER_BIN=path runs another gateway build (an older commit's, for a same-box comparison); the
# load generator is always this tree's.
#
# Records connections held, time to connect, gateway RSS, kernel memory (Slab and the connection
# caches), and the broadcast's time to the last subscriber, in OUTDIR/million.json. Bounded: every
# process it starts is stopped by PID when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
USERS=${1:-1000000}
OUT=${2:-target/million}
RATE=${RATE:-12000}
HOLD_S=${HOLD_S:-30}
# One ring per worker holds at most the soft RLIMIT_NOFILE (20,000 here); SO_REUSEPORT spreads
# connections by hash, so leave ~20% headroom per ring.
WORKERS=${WORKERS:-$(( (USERS * 12 / 10 + 19999) / 20000 ))}
PORT=${PORT:-4400}
ADMIN=${ADMIN:-4401}
BIN=target/release/ringgate
SERVER_BIN=${SERVER_BIN:-$BIN}
mkdir -p "$OUT"
cargo build --release --quiet

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 2
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

meminfo() { awk -v k="$1:" '$1==k {printf "%.0f\n", $2*1024}' /proc/meminfo; }
caches() {
    awk 'NR>2 && ($1=="TCP"||$1=="sock_inode_cache"||$1=="filp"||$1=="dentry"||$1=="io_kiocb"||$1=="lsm_inode_cache"||$1=="lsm_file_cache"||$1 ~ /^kmalloc-/) {s+=$2*$4} END {printf "%.0f\n", s}' /proc/slabinfo
}
stats_open() { curl -s "http://127.0.0.1:$ADMIN/api/stats" | python3 -c 'import json,sys; print(sum(w["open"] for w in json.load(sys.stdin)["workers"]))'; }
rss() { awk '/^Rss:/ {printf "%.0f\n", $2*1024}' "/proc/$1/smaps_rollup"; }

slab0=$(meminfo Slab); caches0=$(caches); avail0=$(meminfo MemAvailable)
"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --workers "$WORKERS" \
    --max-connections-per-worker 20000 --idle-timeout-ms 3600000 --listen-backlog 65535 \
    --max-handshakes-per-worker 65535 --log-level warn >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done
rss0=$(rss "$GW")

RAMP_S=$(( USERS / RATE + 1 ))
DURATION=$(( RAMP_S * 3 / 2 + HOLD_S + 45 ))
t0=$(date +%s.%N)
"$BIN" load --url "ws://127.0.0.1:$PORT/socket/websocket" --scenario seed --users "$USERS" \
    --arrival-rate "$RATE" --duration "$DURATION" --procs 2 --source 127.0.0.2-127.0.0.80 \
    --connect-timeout-ms 30000 --quiet --out "$OUT/load" >"$OUT/load.log" 2>&1 &
LOAD=$!; PIDS+=("$LOAD")

# Until every user is connected, or the count stops growing for 15 s (users that timed out).
open=0; last=-1; still=0
deadline=$(( $(date +%s) + RAMP_S * 2 + 60 ))
while (( $(date +%s) < deadline )); do
    open=$(stats_open || echo 0)
    (( open >= USERS )) && break
    if (( open == last )); then still=$((still + 1)); else still=0; last=$open; t1=$(date +%s.%N); fi
    (( still >= 15 )) && break
    kill -0 "$LOAD" 2>/dev/null || break
    sleep 1
done
(( open >= USERS )) && t1=$(date +%s.%N)
echo "held $open connections after $(python3 -c "print(round($t1-$t0,1))") s"
sleep "$HOLD_S"
open=$(stats_open)
rss1=$(rss "$GW"); slab1=$(meminfo Slab); caches1=$(caches); avail1=$(meminfo MemAvailable)
curl -s "http://127.0.0.1:$ADMIN/api/stats" >"$OUT/stats.json"

# The broadcast: its payload carries CLOCK_MONOTONIC ns, which the load generator turns into a
# delivery latency for every subscriber (same clock in every process of this box).
pub=$(python3 - "$ADMIN" <<'PY'
import json, sys, time, urllib.request
body = json.dumps({"topic": "rooms:lobby", "event": "new_msg",
                   "payload": {"body": "to everyone", "ts_ns": time.monotonic_ns()}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/broadcast", data=body, method="POST",
                             headers={"content-type": "application/json"})
print(urllib.request.urlopen(req).read().decode())
PY
)
echo "publish: $pub"
sleep 15
# The server's share of kernel memory, by exit-delta: stop the load processes (so they cannot
# close their sockets on the resets), kill the gateway, measure what the connection caches freed.
LOADS=$(pgrep -P "$LOAD" || true)
for p in $LOAD $LOADS; do kill -STOP "$p" 2>/dev/null || true; done
sleep 1
cachesA=$(caches)
kill -KILL "$GW"
# Closing a million sockets takes the kernel a while after the process is gone: wait until the
# caches stop shrinking (bounded).
prev=0; cachesB=$(caches)
for _ in $(seq 1 120); do
    sleep 1; prev=$cachesB; cachesB=$(caches)
    kill -0 "$GW" 2>/dev/null && continue
    (( cachesB >= prev - 1000000 )) && break
done
for p in $LOAD $LOADS; do kill -CONT "$p" 2>/dev/null || true; done
wait "$LOAD" || true
python3 - "$OUT" "$USERS" "$open" "$t0" "$t1" "$rss0" "$rss1" "$slab0" "$slab1" "$caches0" "$caches1" "$avail0" "$avail1" "$WORKERS" "$cachesA" "$cachesB" <<'PY'
import json, sys
out, users, held, t0, t1, rss0, rss1, slab0, slab1, c0, c1, a0, a1, workers, ca, cb = sys.argv[1:]
held = int(held); n = max(held, 1)
summary = json.load(open(f"{out}/load/summary.json"))
res = {
    "users": int(users), "held": held, "workers": int(workers),
    "connect_s": round(float(t1) - float(t0), 1),
    "gateway_rss_bytes": int(rss1), "gateway_rss_per_conn": round((int(rss1) - int(rss0)) / n, 1),
    "slab_delta_bytes": int(slab1) - int(slab0),
    "connection_caches_delta_bytes": int(c1) - int(c0),
    "kernel_per_pair": round((int(c1) - int(c0)) / n, 1),
    "server_kernel_per_conn_exit_delta": round((int(ca) - int(cb)) / n, 1),
    "mem_available_drop_bytes": int(a0) - int(a1),
    "delivery": summary.get("delivery") or summary.get("latency", {}).get("delivery"),
    "load_summary": {k: summary.get(k) for k in ("users", "connected", "errors", "messages_received", "connect_rate")},
}
json.dump(res, open(f"{out}/million.json", "w"), indent=2)
print(json.dumps(res, indent=2))
PY

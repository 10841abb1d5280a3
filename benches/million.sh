#!/usr/bin/env bash
# The run that answers the talk: one `ringgate serve` and `ringgate load` on this box hold N idle
# joined connections (default 1,000,000), measure what their heartbeats cost the gateway, then
# send one broadcast to all of them and wait until every subscriber has it.
#
#   benches/million.sh [USERS] [OUTDIR]
#
# Knobs (environment):
#   RATE=8000           users arriving per second (12,000/s overflowed the listen queue here:
#                       somaxconn is 4096 on this box, and the clients share its two cores)
#   HOLD_S=30           settle time after the last connect, before the memory readings
#   HB_WINDOW_S=60      the quiet window in which heartbeats are counted against the gateway's CPU
#                       (phoenix.js sends one per connection every 30 s: keep it ≥ 60)
#   BCAST_TIMEOUT_S=120 longest wait for every subscriber to have the broadcast
#   SCENARIO=seed       the load's scenario: `seed` (V1 join, no heartbeats: the talk's Tsung run), or
#                       `phoenix-idle` (V2 join + phoenix.js's heartbeat every 30 s) for the heartbeat
#                       window to measure something. On this 2-core box 2M with heartbeats does not
#                       hold: their cost (~19 µs each on the gateway, as much again in the load
#                       generator) is ~2.5 cores at 2M.
#   PROCS=2             load processes
#   SOURCE=             source addresses for `ringgate load --source`; unset: `ringgate load`
#                       chooses enough loopback addresses itself (and says how many)
#   WORKERS, PORT, ADMIN, SERVER_BIN (another gateway build, for a same-box comparison; the load
#   generator is always this tree's)
#   SERVER_ARGS=        more `serve` flags, word-split (e.g. `--recv-mode multishot` to compare how
#                       idle connections wait)
#
# Records connections held, time to connect, gateway RSS, kernel memory (Slab and the connection
# caches), the heartbeats' server CPU, and the broadcast's time to the last subscriber — measured
# before anything is stopped — in OUTDIR/million.json. Bounded: every wait has a deadline, and
# every process it starts is stopped by PID when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
USERS=${1:-1000000}
OUT=${2:-target/million}
RATE=${RATE:-8000}
HOLD_S=${HOLD_S:-30}
HB_WINDOW_S=${HB_WINDOW_S:-60}
BCAST_TIMEOUT_S=${BCAST_TIMEOUT_S:-120}
SCENARIO=${SCENARIO:-seed}
PROCS=${PROCS:-2}
SOURCE=${SOURCE:-}
# One ring per worker holds at most the soft RLIMIT_NOFILE (20,000 here); SO_REUSEPORT spreads
# connections by hash, so leave ~20% headroom per ring.
WORKERS=${WORKERS:-$(( (USERS * 12 / 10 + 19999) / 20000 ))}
PORT=${PORT:-4400}
ADMIN=${ADMIN:-4401}
BIN=target/release/ringgate
SERVER_BIN=${SERVER_BIN:-$BIN}
read -r -a SERVER_EXTRA <<<"${SERVER_ARGS:-}"
CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$OUT"
cargo build --release --quiet
(( HB_WINDOW_S >= 60 )) || echo "note: HB_WINDOW_S=$HB_WINDOW_S is shorter than two heartbeat intervals (60 s)"

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
# Sums over the gateway's workers from /api/stats: open connections, data messages received.
stats_sum() { curl -s --max-time 30 "http://127.0.0.1:$ADMIN/api/stats" | python3 -c "import json,sys; print(sum(w$1 for w in json.load(sys.stdin)['workers']))"; }
stats_open() { stats_sum '["open"]'; }
rss() { awk '/^Rss:/ {printf "%.0f\n", $2*1024}' "/proc/$1/smaps_rollup"; }
# utime + stime of PIDs, clock ticks (the comm field may hold spaces: fields after the last ')').
cpu_ticks() {
    local t=0 p f
    for p in "$@"; do
        read -r -a f < <(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        t=$(( t + f[11] + f[12] ))  # fields 14 and 15 of the line
    done
    echo "$t"
}
# All CPUs' busy ticks (everything but idle and iowait), from /proc/stat.
box_busy_ticks() { awk '$1=="cpu" {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
# The load's cumulative deliveries and errors, from its last progress line.
load_delivered() { { grep -o 'delivered [0-9]*' "$OUT/load.log" || echo "delivered 0"; } | tail -1 | awk '{print $2}'; }
load_errors() { { grep -o '| errors [0-9]*' "$OUT/load.log" || echo "| errors 0"; } | tail -1 | awk '{print $3}'; }
now() { date +%s.%N; }

slab0=$(meminfo Slab); caches0=$(caches); avail0=$(meminfo MemAvailable)
"$SERVER_BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --workers "$WORKERS" \
    --max-connections-per-worker 20000 --idle-timeout-ms 3600000 --listen-backlog 65535 \
    --max-handshakes-per-worker 65535 --log-level warn "${SERVER_EXTRA[@]+"${SERVER_EXTRA[@]}"}" \
    >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done
rss0=$(rss "$GW")

RAMP_S=$(( USERS / RATE + 1 ))
# Long enough for a slow ramp and every phase below; the script ends the load itself (SIGINT).
DURATION=$(( RAMP_S * 2 + HOLD_S + HB_WINDOW_S + BCAST_TIMEOUT_S + 120 ))
t0=$(now)
"$BIN" load --url "ws://127.0.0.1:$PORT/socket/websocket" --scenario "$SCENARIO" --users "$USERS" \
    --arrival-rate "$RATE" --duration "$DURATION" --procs "$PROCS" ${SOURCE:+--source "$SOURCE"} \
    --connect-timeout-ms 30000 --out "$OUT/load" >"$OUT/load.log" 2>&1 &
LOAD=$!; PIDS+=("$LOAD")
sleep 1
sources_line=$(grep -m1 'source address' "$OUT/load.log" || echo "sources: chosen by the kernel (one address is enough)")
echo "$sources_line"

# Until every user is connected, or the count stops growing for 15 s (users that timed out).
open=0; last=-1; still=0
deadline=$(( $(date +%s) + RAMP_S * 2 + 60 ))
while (( $(date +%s) < deadline )); do
    open=$(stats_open || echo 0)
    (( open >= USERS )) && break
    if (( open == last )); then still=$((still + 1)); else still=0; last=$open; t1=$(now); fi
    (( still >= 15 )) && break
    kill -0 "$LOAD" 2>/dev/null || break
    sleep 1
done
(( open >= USERS )) && t1=$(now)
echo "held $open connections after $(python3 -c "print(round($t1-$t0,1))") s"
sleep "$HOLD_S"
open=$(stats_open)
rss1=$(rss "$GW"); slab1=$(meminfo Slab); caches1=$(caches); avail1=$(meminfo MemAvailable)
curl -s "http://127.0.0.1:$ADMIN/api/stats" >"$OUT/stats.json"

# Heartbeat idle cost: a quiet window (no connects, no broadcast) in which the only client
# messages are heartbeats. Counted by the gateway (data messages received), not assumed.
LOADS=$(pgrep -P "$LOAD" || true)
hb_in0=$(stats_sum '["stats"]["messages_in"]'); gw0=$(cpu_ticks "$GW")
ld0=$(cpu_ticks $LOAD $LOADS); box0=$(box_busy_ticks); hw0=$(now)
sleep "$HB_WINDOW_S"
hb_in1=$(stats_sum '["stats"]["messages_in"]'); gw1=$(cpu_ticks "$GW")
ld1=$(cpu_ticks $LOAD $LOADS); box1=$(box_busy_ticks); hw1=$(now)
python3 - "$hb_in0" "$hb_in1" "$gw0" "$gw1" "$ld0" "$ld1" "$box0" "$box1" "$hw0" "$hw1" "$CLK_TCK" "$open" "$OUT/heartbeats.json" <<'PY'
import json, sys
i0, i1, g0, g1, l0, l1, b0, b1 = map(int, sys.argv[1:9])
w0, w1 = map(float, sys.argv[9:11]); tck = int(sys.argv[11]); held = int(sys.argv[12])
win = w1 - w0; hb = i1 - i0
gw_s = (g1 - g0) / tck; load_s = (l1 - l0) / tck; box_s = (b1 - b0) / tck
r = {"window_s": round(win, 1), "heartbeats": hb, "expected_at_one_per_30s": round(held * win / 30),
     "gateway_cpu_s": round(gw_s, 2),
     "gateway_cpu_us_per_heartbeat": round(gw_s * 1e6 / hb, 2) if hb else None,
     "gateway_idle_cpu_share_of_one_core": round(gw_s / win, 4),
     "load_cpu_s": round(load_s, 2), "other_processes_cpu_s": round(box_s - gw_s - load_s, 2)}
json.dump(r, open(sys.argv[13], "w"))
per = f"{r['gateway_cpu_us_per_heartbeat']} µs" if hb else "n/a"
print(f"heartbeats: {hb} in {r['window_s']} s (expected {r['expected_at_one_per_30s']} at one per 30 s); "
      f"gateway CPU {r['gateway_cpu_s']} s = {per} per heartbeat, "
      f"{100 * r['gateway_idle_cpu_share_of_one_core']:.2f}% of one core; "
      f"load processes {r['load_cpu_s']} s, other processes {r['other_processes_cpu_s']} s")
PY

# The broadcast: its payload carries CLOCK_MONOTONIC ns, which the load generator turns into a
# delivery latency for every subscriber (same clock in every process of this box). Nothing is
# stopped until every subscriber has it (the load's delivered count) or the timeout passes.
delivered0=$(load_delivered)
pub=$(python3 - "$ADMIN" <<'PY'
import json, sys, time, urllib.request
body = json.dumps({"topic": "rooms:lobby", "event": "new_msg",
                   "payload": {"body": "to everyone", "ts_ns": time.monotonic_ns()}}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/api/broadcast", data=body, method="POST",
                             headers={"content-type": "application/json"})
print(urllib.request.urlopen(req, timeout=60).read().decode())
PY
)
tp=$(now)
subscribers=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["subscribers"])' "$pub")
echo "publish: $pub"
bdeadline=$(( $(date +%s) + BCAST_TIMEOUT_S ))
timed_out=1
while (( $(date +%s) < bdeadline )); do
    delivered=$(( $(load_delivered) - delivered0 ))
    if (( delivered >= subscribers )); then timed_out=0; break; fi
    kill -0 "$LOAD" 2>/dev/null || break
    sleep 1
done
delivered=$(( $(load_delivered) - delivered0 )); waited=$(python3 -c "print(round($(now)-$tp,1))")
errors_before_teardown=$(load_errors)
if (( timed_out )); then
    echo "broadcast: TIMED OUT after $waited s: $delivered of $subscribers subscribers have it"
else
    echo "broadcast: all $subscribers subscribers have it (seen by the load's per-second report after $waited s)"
fi

# The server's share of kernel memory, by exit-delta: stop the load processes (so they cannot
# close their sockets on the resets), kill the gateway, measure what the connection caches freed.
LOADS=$(pgrep -P "$LOAD" || true)
for p in $LOAD $LOADS; do kill -STOP "$p" 2>/dev/null || true; done
sleep 1
cachesA=$(caches)
kill -KILL "$GW"
wait "$GW" 2>/dev/null || true  # reaped here, so bash does not report the kill
# Closing a million sockets takes the kernel a while after the process is gone: wait until the
# caches stop shrinking (bounded).
prev=0; cachesB=$(caches)
for _ in $(seq 1 120); do
    sleep 1; prev=$cachesB; cachesB=$(caches)
    kill -0 "$GW" 2>/dev/null && continue
    (( cachesB >= prev - 1000000 )) && break
done
for p in $LOAD $LOADS; do kill -CONT "$p" 2>/dev/null || true; done
# End the load now (it forwards SIGINT to its processes, which write the report), bounded.
kill -INT "$LOAD" 2>/dev/null || true
for _ in $(seq 1 120); do kill -0 "$LOAD" 2>/dev/null || break; sleep 1; done
kill -KILL "$LOAD" 2>/dev/null || true
wait "$LOAD" || true
python3 - "$OUT" "$USERS" "$open" "$t0" "$t1" "$rss0" "$rss1" "$slab0" "$slab1" "$caches0" "$caches1" "$avail0" "$avail1" "$WORKERS" "$cachesA" "$cachesB" \
    "$OUT/heartbeats.json" "$subscribers" "$delivered" "$waited" "$timed_out" "$errors_before_teardown" "$sources_line" "$SCENARIO" "${SERVER_ARGS:-}" <<'PY'
import json, sys
(out, users, held, t0, t1, rss0, rss1, slab0, slab1, c0, c1, a0, a1, workers, ca, cb,
 hb, subs, delivered, waited, timed_out, errs, sources_line, scenario, server_args) = sys.argv[1:]
held = int(held); n = max(held, 1)
summary = json.load(open(f"{out}/load/summary.json"))
d = summary.get("delivery") or {}
res = {
    "users": int(users), "held": held, "workers": int(workers), "scenario": scenario,
    "server_args": server_args,
    "sources": summary.get("sources"), "sources_line": sources_line,
    "connect_s": round(float(t1) - float(t0), 1),
    "gateway_rss_bytes": int(rss1), "gateway_rss_per_conn": round((int(rss1) - int(rss0)) / n, 1),
    "slab_delta_bytes": int(slab1) - int(slab0),
    "connection_caches_delta_bytes": int(c1) - int(c0),
    "kernel_per_pair": round((int(c1) - int(c0)) / n, 1),
    "server_kernel_per_conn_exit_delta": round((int(ca) - int(cb)) / n, 1),
    "mem_available_drop_bytes": int(a0) - int(a1),
    "heartbeats": json.load(open(hb)),
    "broadcast": {
        "subscribers": int(subs), "delivered": int(delivered), "timed_out": timed_out == "1",
        "waited_s": float(waited),
        "time_to_last_ms": d.get("max_ms"), "p50_ms": d.get("p50_ms"), "p99_ms": d.get("p99_ms"),
    },
    "delivery": d,
    "load_errors_before_teardown": int(errs),
    "load_summary": {k: summary.get(k) for k in ("users", "connected", "errors", "messages_received", "connect_rate")},
}
json.dump(res, open(f"{out}/million.json", "w"), indent=2)
b = res["broadcast"]
print(json.dumps(res, indent=2))
print(f"broadcast to {b['subscribers']}: {b['delivered']} delivered"
      f"{' (TIMED OUT)' if b['timed_out'] else ''}; time to subscriber p50 {b['p50_ms']} ms, "
      f"p99 {b['p99_ms']} ms, last {b['time_to_last_ms']} ms")
PY

#!/usr/bin/env bash
# What a heartbeat costs the gateway, and what `wake_batch_us` trades for it: 20,000 phoenix.js-like
# clients (V2 join, a heartbeat every 5 s whose reply is awaited: 4,000 heartbeats/s), one
# `ringgate serve --workers 2` per run, the runs interleaved over the windows given.
#
#   benches/heartbeats.sh [WINDOW_US ...]      (default: 0 2000 4000; ROUNDS=2 rounds of them)
#
# Per run, over a 40 s window after 20 s of settling: the gateway's CPU per heartbeat (utime +
# stime of its process over the messages it received in the window), its user share, its context
# switches and kernel waits (`waits` of /api/stats) per heartbeat, and the heartbeat round trip the
# load generator saw (p50/p99/max over the run).
# Bounded: each run ends with the load's 75 s duration; every process started is stopped by PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WINDOWS=("$@")
(( $# )) || WINDOWS=(0 2000 4000)
ROUNDS=${ROUNDS:-2}
PORT=${PORT:-4500}
ADMIN=${ADMIN:-4501}
OUT=${OUT:-target/heartbeats}
BIN=target/release/ringgate
USERS=20000
INTERVAL_S=5
WINDOW_S=40
mkdir -p "$OUT"
cargo build --release --quiet

# The processes of the run in progress (children of this script, so `wait` reaps them and a PID
# is never signalled after it was reaped).
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }  # utime stime
# Sum over the workers of one counter of /api/stats.
api_stat() { curl -s --max-time 10 "http://127.0.0.1:$ADMIN/api/stats" | python3 -c "import json,sys; print(sum(w['stats']['$1'] for w in json.load(sys.stdin)['workers']))"; }
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v+=$2} /^nonvoluntary_ctxt/ {n+=$2} END {print v+n}'; }
CLK_TCK=$(getconf CLK_TCK)

printf '%-10s %12s %8s %10s %9s %9s %9s %9s %9s %7s\n' window_us us_per_hb user_% switch/hb waits/hb heartbeats p50_ms p99_ms max_ms errors
for round in $(seq 1 "$ROUNDS"); do
    for w in "${WINDOWS[@]}"; do
        dir="$OUT/w$w-r$round"; mkdir -p "$dir"
        "$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --workers 2 \
            --wake-batch-us "$w" --log-level warn >"$dir/gateway.log" 2>&1 &
        GW=$!; PIDS=("$GW")
        for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.1; done
        "$BIN" load --url "ws://127.0.0.1:$PORT/socket/websocket" --scenario benches/scenarios/heartbeat-5s.toml \
            --workers 1 --out "$dir/load" >"$dir/load.log" 2>&1 &
        LOAD=$!; PIDS+=("$LOAD")
        sleep 20
        read -r u0 s0 < <(ticks "$GW"); c0=$(switches "$GW"); m0=$(api_stat messages_in); k0=$(api_stat waits)
        sleep "$WINDOW_S"
        read -r u1 s1 < <(ticks "$GW"); c1=$(switches "$GW"); m1=$(api_stat messages_in); k1=$(api_stat waits)
        # The load ends itself (the scenario's 75 s); the gateway is asked to stop, then killed.
        timeout 60 tail --pid="$LOAD" -f /dev/null || kill -KILL "$LOAD" 2>/dev/null || true
        kill -INT "$GW" 2>/dev/null || true
        timeout 20 tail --pid="$GW" -f /dev/null || kill -KILL "$GW" 2>/dev/null || true
        cleanup
        hb=$(( m1 - m0 ))
        if (( hb <= 0 )); then echo "$w: no heartbeats in the window (see $dir)"; continue; fi
        python3 - "$dir/load/summary.json" "$w" "$hb" "$u0" "$s0" "$u1" "$s1" "$c0" "$c1" "$CLK_TCK" "$(( k1 - k0 ))" <<'PY'
import json, sys
summary, w, hb, u0, s0, u1, s1, c0, c1, tck, waits = sys.argv[1:]
s = json.load(open(summary))
hb = int(hb); tck = int(tck)
user = (int(u1) - int(u0)) / tck; sys_ = (int(s1) - int(s0)) / tck
t = s["transactions"]["heartbeat"]
print(f"{w:<10} {(user + sys_) * 1e6 / hb:12.2f} {100 * user / max(user + sys_, 1e-9):8.0f} "
      f"{(int(c1) - int(c0)) / hb:10.2f} {int(waits) / hb:9.2f} {hb:9d} {t['p50_ms']:9.3f} {t['p99_ms']:9.3f} {t['max_ms']:9.3f} "
      f"{sum(s['errors'].values()):7d}")
PY
    done
done

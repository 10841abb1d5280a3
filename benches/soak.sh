#!/usr/bin/env bash
# Soak: 15,000 joined connections for DURATION_S (default 1800 s) with a broadcast every second and
# 1% of the clients replaced per minute, the population held constant: 14,250 stayers
# (benches/soak/stayers.toml) and 750 churners arriving at 2.5/s and leaving after a fixed 300 s
# (benches/soak/churn.toml), so arrivals = departures once the first churners leave; the
# measurement starts after that warm-up (CHURN_LIFETIME_S + 15 s). Records the gateway's RSS and
# open connections at the start and the end, deliveries expected to the stayers (the sum of the
# subscriber counts the admin API returned for rooms:lobby) against deliveries received, and the
# delivery p99 per second (the load report's timeseries.csv). Exits 1 if one delivery was lost.
#
#   benches/soak.sh [DURATION_S] [OUTDIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION_S=${1:-1800}
OUT=${2:-target/soak}
PORT=${PORT:-4500}
ADMIN=${ADMIN:-4501}
BIN=target/release/ringgate
CHURN_LIFETIME_S=300   # ten 30 s heartbeats: benches/soak/churn.toml
mkdir -p "$OUT"
cargo build --release --quiet
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; sleep 2; for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT
rss() { awk '/^Rss:/ {printf "%.0f\n", $2*1024}' "/proc/$1/smaps_rollup"; }
open_conns() { curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk '/^ringgate_connections_open\{/ {n += $2} END {print n + 0}'; }

"$BIN" serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN" --workers 2 \
    --log-level warn >"$OUT/gateway.log" 2>&1 &
GW=$!; PIDS+=("$GW")
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$ADMIN/healthz" >/dev/null && break; sleep 0.2; done
WARMUP_S=$((CHURN_LIFETIME_S + 15))
"$BIN" load --url "ws://127.0.0.1:$PORT" --scenario benches/soak/stayers.toml \
    --duration "$((WARMUP_S + DURATION_S + 60))" --source 127.0.0.2-127.0.0.8 --quiet --out "$OUT/load" \
    >"$OUT/load.log" 2>&1 &
LOAD=$!; PIDS+=("$LOAD")
"$BIN" load --url "ws://127.0.0.1:$PORT" --scenario benches/soak/churn.toml \
    --duration "$((WARMUP_S + DURATION_S + 60))" --source 127.0.0.9 --quiet --out "$OUT/churn" \
    >"$OUT/churn.log" 2>&1 &
CHURN=$!; PIDS+=("$CHURN")
sleep "$WARMUP_S"   # the stayers' ramp, and the first churners leaving as new ones arrive
rss_start=$(rss "$GW")
conns_start=$(open_conns)
# One broadcast a second for DURATION_S; each 202 says how many subscribers it was queued for.
python3 - "$ADMIN" "$DURATION_S" "$OUT/published.txt" <<'PY'
import json, sys, time, urllib.request
admin, seconds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
expected = 0
with open(out, "w") as f:
    start = time.monotonic()
    for n in range(seconds):
        body = json.dumps({"topic": "rooms:lobby", "event": "tick",
                           "payload": {"n": n, "ts_ns": time.monotonic_ns()}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{admin}/api/broadcast", data=body, method="POST")
        subs = json.load(urllib.request.urlopen(req))["subscribers"]
        expected += subs
        f.write(f"{n} {subs}\n")
        time.sleep(max(0.0, start + n + 1 - time.monotonic()))
print(expected)
PY
sleep 5
rss_end=$(rss "$GW")
conns_end=$(open_conns)
kill -INT "$LOAD" "$CHURN"; wait "$LOAD" || true; wait "$CHURN" || true
python3 - "$OUT" "$rss_start" "$rss_end" "$conns_start" "$conns_end" <<'PY'
import json, sys
out, rss0, rss1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns0, conns1 = int(sys.argv[4]), int(sys.argv[5])
expected = sum(int(l.split()[1]) for l in open(f"{out}/published.txt"))
s = json.load(open(f"{out}/load/summary.json"))
d = s.get("delivery") or {}
res = {"rss_start": rss0, "rss_end": rss1, "open_connections_start": conns0,
       "open_connections_end": conns1, "deliveries_expected": expected,
       "deliveries_received": d.get("count"), "delivery_p99_ms": d.get("p99_ms"),
       "delivery_max_ms": d.get("max_ms"), "errors": s.get("errors")}
json.dump(res, open(f"{out}/soak.json", "w"), indent=2)
print(json.dumps(res, indent=2))
lost = expected - (d.get("count") or 0)
if lost != 0:
    sys.exit(f"soak: {lost} deliveries lost (expected {expected}, received {d.get('count')})")
PY
echo "p99 per second: $OUT/load/timeseries.csv; report: $OUT/load/report.html"

#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run).
#
# Stages, fail-fast, each with a header and a summary at the end:
#   deps        Python test deps into .venv-test/ (+ npm ci of tests/js if present,
#               + Debian chromium for the load report render test)
#   fmt         cargo fmt --all -- --check
#   clippy      cargo clippy --all-targets -- -D warnings
#   cargo-test  cargo test --release
#   build       cargo build --release
#   pytest      tests/python against a fresh `ringgate serve` (default limits)
#   autobahn    tests/autobahn/run.py against a server with the Autobahn limits
#   node-test   node --test tests/js/*.test.mjs (only if tests/js/package.json exists); the
#               shell expands the glob, so Node 20 and Node 22+ get the same explicit file list
#               (since Node 21 every argument is a glob pattern: a bare directory matches only
#               itself and is then run as a module, not searched)
#   browser     node --test tests/browser/: dashboard and chat pages in headless Chromium
#               (playwright-core, real time); screenshots in target/browser/
#   bus-test    tests/js/bus/*.bus.mjs: 3 gateways on redis-server / a 3+3 Redis Cluster / HAProxy /
#               an Erlang (escript) peer in a Phoenix.PubSub over Redis
#   fuzz        scripts/fuzz.sh: every fuzz target for FUZZ_SECONDS_PER_TARGET s
#
# Knobs (environment):
#   RINGGATE_BIN=path  server binary to test (default target/release/ringgate,
#                      or $CARGO_TARGET_DIR/release/ringgate).
#                      A *.py path runs under the test venv's python, e.g.
#                      RINGGATE_BIN=tests/python/standin_server.py.
#   SKIP_LINT=1        skip fmt and clippy (quick local loops)
#   SKIP_CARGO=1       skip every cargo stage (harness trials against a stand-in)
#   FUZZ_SECONDS_PER_TARGET=N  fuzzing time per target (default 20: with the cold sanitizer build, the fuzz stage is the longest, and the whole run must stay under 25 min)
#
# Needs only bash, coreutils, python3 (+ pip), cargo (+ a C++ compiler for the fuzz stage's
# libFuzzer), apt-get (chromium) and, for tests/js, node/npm.
# Runs from any cwd, needs no stdin, and may be re-run: the venv is reused
# while tests/python/requirements.txt is unchanged.
set -euo pipefail

ORIG_PWD=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=$ROOT/.venv-test
LOG_DIR=$ROOT/target/test-logs
AUTOBAHN_OUT=$ROOT/target/autobahn
# Readiness wait for a started server: generous for a cold, loaded CI box.
HEALTH_TIMEOUT_S=30
# Hard caps so a wedged server cannot eat CI's budget (whole script: 25 min).
PYTEST_TIMEOUT_S=600
AUTOBAHN_TIMEOUT_S=900
NODE_TIMEOUT_S=600
# Caps of the cargo stages (a cold release build of the tests takes ~6 min on 2 cores) and of
# package installs. The fuzz stage: its build, then FUZZ_SECONDS_PER_TARGET + 60 s per target.
declare -A CARGO_TIMEOUT_S=([fmt]=120 [clippy]=900 [cargo-test]=1200 [build]=900)
FUZZ_TARGETS=$(find fuzz/fuzz_targets -name "*.rs" | wc -l)
CARGO_TIMEOUT_S[fuzz]=$((900 + FUZZ_TARGETS * (${FUZZ_SECONDS_PER_TARGET:-20} + 60)))
INSTALL_TIMEOUT_S=600
BROWSER_TIMEOUT_S=300
BUS_TIMEOUT_S=600
# Autobahn 9.* sends 16 MiB messages and 4 MiB in 64-byte fragments; see
# tests/autobahn/README.md.
AUTOBAHN_LIMITS=(--max-frame-bytes 16777216 --max-message-bytes 16777216 --max-fragments 100000 --max-messages-per-second 0)

STAGES=(deps fmt clippy cargo-test build pytest autobahn node-test browser bus-test fuzz)
declare -A STATUS=()
CURRENT=""
STAGE_T0=0
SERVER_PIDS=()

# ---------------------------------------------------------------- reporting

stage_begin() {
    CURRENT=$1
    STAGE_T0=$SECONDS
    local i n=0
    for i in "${!STAGES[@]}"; do [[ ${STAGES[$i]} == "$1" ]] && n=$((i + 1)); done
    printf '\n==== [%d/%d] %s ====\n' "$n" "${#STAGES[@]}" "$1"
}

stage_end() {
    STATUS[$CURRENT]="PASS ($((SECONDS - STAGE_T0)) s)"
    CURRENT=""
}

stage_skip() {
    STATUS[$1]="SKIP ($2)"
    printf '\n==== %s: skipped (%s) ====\n' "$1" "$2"
}

on_exit() {
    local rc=$? pid
    for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid" || true; done
    if [[ -n $CURRENT ]]; then
        STATUS[$CURRENT]="FAIL ($((SECONDS - STAGE_T0)) s, exit $rc)"
    fi
    local passed=0 failed=0 skipped=0 s
    printf '\n==== summary ====\n'
    for s in "${STAGES[@]}"; do
        local st=${STATUS[$s]:-NOT RUN}
        printf '  %-11s %s\n' "$s" "$st"
        case $st in PASS*) passed=$((passed + 1)) ;; FAIL*) failed=$((failed + 1)) ;;
                    SKIP*) skipped=$((skipped + 1)) ;; esac
    done
    if ((rc != 0 && failed == 0)); then failed=1; echo "  (failed outside a stage, exit $rc)"; fi
    echo "stages: $passed passed, $failed failed, $skipped skipped"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ server control

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_healthy PID PORT: 0 once GET /healthz answers 200; 2 if the process
# exits first; 1 if HEALTH_TIMEOUT_S passes.
wait_healthy() {
    "$PY" - "$1" "$2" "$HEALTH_TIMEOUT_S" <<'EOF'
import os, sys, time, urllib.request
pid, port, limit = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(f"server (pid {pid}) exited before becoming healthy", file=sys.stderr)
        sys.exit(2)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"server (pid {pid}) not healthy after {limit:.0f} s")
EOF
}

# start_server NAME [ARGS...]: start `serve` on a free port with ARGS, wait for
# /healthz. Sets SERVER_PID and SERVER_PORT; output goes to $LOG_DIR/NAME.log.
start_server() {
    local name=$1 attempt log=$LOG_DIR/$1.log
    shift
    mkdir -p "$LOG_DIR"
    # A free port can be taken between probe and bind: retry on a new one if
    # the server exits early (a hang is not retried).
    local rc=0
    for attempt in 1 2 3; do
        SERVER_PORT=$(free_port)
        ADMIN_PORT=$(free_port)
        echo "+ ${RINGGATE_CMD[*]} serve --listen 127.0.0.1:$SERVER_PORT --admin-listen 127.0.0.1:$ADMIN_PORT $*  (log: $log)"
        "${RINGGATE_CMD[@]}" serve --listen "127.0.0.1:$SERVER_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" "$@" >"$log" 2>&1 </dev/null &
        SERVER_PID=$!
        SERVER_PIDS+=("$SERVER_PID")
        rc=0
        wait_healthy "$SERVER_PID" "$SERVER_PORT" || rc=$?
        if ((rc == 0)); then
            echo "server $name: pid $SERVER_PID, port $SERVER_PORT, healthy"
            return 0
        fi
        stop_server "$SERVER_PID" || true
        echo "--- last lines of $log (attempt $attempt) ---"
        tail -n 30 "$log" || true
        ((rc == 2)) || break
    done
    return 1
}

# stop_server PID: SIGTERM, then SIGKILL after 10 s. Fails if the server had
# already died on its own (a crash during tests must not go unnoticed).
stop_server() {
    local pid=$1 i rc=0 p keep=()
    for p in "${SERVER_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    SERVER_PIDS=("${keep[@]+"${keep[@]}"}")
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || rc=$?
        echo "server pid $pid had already exited (status $rc)"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "server pid $pid ignored SIGTERM for 10 s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    echo "server pid $pid stopped (status $rc)"
}

# ------------------------------------------------------------------- stages

# Python test deps in a venv. Fallbacks for machines whose python3 lacks
# ensurepip (Debian without python3-venv): a pip-less venv filled by the
# system pip's --python, and last the user site.
install_python_deps() {
    local req=tests/python/requirements.txt stamp=$VENV/.requirements.sha256 want
    want=$(sha256sum "$req" | cut -d' ' -f1)
    # Reuse only a venv made here for these exact requirements (a copied or
    # moved venv still points at its old location).
    if [[ -x $VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]] &&
        [[ $("$VENV/bin/python" -c 'import sys; print(sys.prefix)' 2>/dev/null) == "$VENV" ]]; then
        PY=$VENV/bin/python
        echo "python deps: $VENV up to date"
        return 0
    fi
    local pip=()
    rm -rf "$VENV"
    if python3 -m venv "$VENV" >/dev/null 2>&1; then
        pip=("$VENV/bin/python" -m pip)
    else
        rm -rf "$VENV"
        if python3 -m venv --without-pip "$VENV" && python3 -m pip --version >/dev/null 2>&1; then
            pip=(python3 -m pip --python "$VENV/bin/python")
        fi
    fi
    if ((${#pip[@]})); then
        echo '*' >"$VENV/.gitignore"
        timeout -k 10 "$INSTALL_TIMEOUT_S" "${pip[@]}" install -q --disable-pip-version-check -r "$req"
        echo "$want" >"$stamp"
        PY=$VENV/bin/python
    else
        rm -rf "$VENV"
        echo "python deps: no venv possible; installing into the user site"
        PIP_BREAK_SYSTEM_PACKAGES=1 timeout -k 10 "$INSTALL_TIMEOUT_S" python3 -m pip install -q --user --disable-pip-version-check -r "$req"
        PATH=$(python3 -m site --user-base)/bin:$PATH
        PY=python3
    fi
    echo "python deps: installed ($("$PY" -c 'import websockets, pytest; print("websockets", websockets.__version__, "pytest", pytest.__version__)'))"
}

stage_deps() {
    stage_begin deps
    install_python_deps
    # ---- tests/js (the lead adds it): install its locked deps if present ----
    if [[ -f tests/js/package.json ]]; then
        timeout -k 10 "$INSTALL_TIMEOUT_S" npm ci --prefix tests/js --no-audit --no-fund
    else
        echo "tests/js/package.json absent: no npm install"
    fi
    # ---- ss (iproute2): tests/gateway_ws.rs reads the server socket's send buffer with it ----
    if ! command -v ss >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq iproute2 >/dev/null 2>&1 ||
            { timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get update -qq &&
                timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq iproute2 >/dev/null; }
    fi
    echo "ss: $(ss -V 2>&1 | head -n 1)"
    # ---- redis-server + redis-cli and haproxy: the multi-node bus tests (tests/js/bus) ----
    # ---- erlang-base (erl, escript): the Phoenix.PubSub format's fixtures and peers ----
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 ||
        ! command -v haproxy >/dev/null 2>&1 || ! command -v erl >/dev/null 2>&1 ||
        ! command -v escript >/dev/null 2>&1; then
        echo "installing redis-server, haproxy and erlang-base (multi-node bus tests)"
        export DEBIAN_FRONTEND=noninteractive
        timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq redis-server haproxy erlang-base >/dev/null 2>&1 ||
            { timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get update -qq &&
                timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq redis-server haproxy erlang-base >/dev/null; }
    fi
    echo "redis: $(redis-server --version | head -c 40); $(haproxy -v | head -1 | cut -c1-30); erlang/OTP $(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().')"
    # ---- headless Chromium: tests/load_gateway.rs renders the load report in it ----
    if command -v chromium >/dev/null 2>&1; then
        echo "chromium: $(chromium --version 2>/dev/null)"
    else
        echo "installing chromium (renders ringgate load's HTML report in tests)"
        export DEBIAN_FRONTEND=noninteractive
        timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq chromium >/dev/null 2>&1 ||
            { timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get update -qq &&
                timeout -k 10 "$INSTALL_TIMEOUT_S" apt-get install -y -qq chromium >/dev/null; }
        echo "chromium: $(chromium --version 2>/dev/null)"
    fi
    install_observability_deps
    stage_end
}

# promtool (Debian `prometheus`) lints /metrics in tests/observability.rs; tmux is the pseudo-
# terminal of tests/top.rs; playwright-core drives the system Chromium in tests/browser/.
install_observability_deps() {
    local want=()
    command -v promtool >/dev/null 2>&1 || want+=(prometheus)
    command -v tmux >/dev/null 2>&1 || want+=(tmux)
    if ((${#want[@]})); then
        echo "installing ${want[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null; }
    fi
    echo "promtool: $(promtool --version 2>&1 | head -n1); tmux: $(tmux -V)"
    npm ci --prefix tests/browser --no-audit --no-fund
}

stage_cargo() { # NAME CMD...
    local name=$1
    shift
    if [[ ${SKIP_CARGO:-0} == 1 ]]; then stage_skip "$name" "SKIP_CARGO=1"; return; fi
    stage_begin "$name"
    local cap=${CARGO_TIMEOUT_S[$name]:?no time cap for stage $name}
    echo "+ timeout $cap $*"
    timeout -k 10 "$cap" "$@"
    stage_end
}

stage_lint() { # NAME CMD...
    if [[ ${SKIP_LINT:-0} == 1 ]]; then stage_skip "$1" "SKIP_LINT=1"; return; fi
    stage_cargo "$@"
}

resolve_server_cmd() {
    local bin=${RINGGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/ringgate}
    if [[ $bin != /* && -e $ORIG_PWD/$bin ]]; then bin=$ORIG_PWD/$bin; fi
    if [[ ! -e $bin ]]; then
        echo "server binary not found: $bin (build it, or set RINGGATE_BIN)" >&2
        return 1
    fi
    if [[ $bin == *.py ]]; then RINGGATE_CMD=("$PY" "$bin"); else RINGGATE_CMD=("$bin"); fi
    echo "server under test: ${RINGGATE_CMD[*]}"
}

stage_pytest() {
    stage_begin pytest
    resolve_server_cmd
    start_server pytest --echo-path /echo --workers 2 --log-level warn
    RINGGATE_URL=ws://127.0.0.1:$SERVER_PORT/echo RINGGATE_HTTP=http://127.0.0.1:$SERVER_PORT \
        timeout -k 10 "$PYTEST_TIMEOUT_S" "$PY" -m pytest tests/python
    stop_server "$SERVER_PID"
    stage_end
}

stage_autobahn() {
    stage_begin autobahn
    resolve_server_cmd
    start_server autobahn --echo-path /echo --workers 2 --log-level warn "${AUTOBAHN_LIMITS[@]}"
    timeout -k 10 "$AUTOBAHN_TIMEOUT_S" "$PY" tests/autobahn/run.py \
        "ws://127.0.0.1:$SERVER_PORT/echo" "$AUTOBAHN_OUT"
    stop_server "$SERVER_PID"
    stage_end
}

stage_node() {
    if [[ ! -f tests/js/package.json ]]; then stage_skip node-test "no tests/js/package.json"; return; fi
    stage_begin node-test
    resolve_server_cmd
    local config=()
    if [[ -f tests/js/ringgate.toml ]]; then config=(--config tests/js/ringgate.toml); fi
    start_server node --echo-path /echo --workers 2 --log-level warn "${config[@]+"${config[@]}"}"
    RINGGATE_URL=ws://127.0.0.1:$SERVER_PORT/echo RINGGATE_HTTP=http://127.0.0.1:$SERVER_PORT \
        RINGGATE_PORT=$SERVER_PORT RINGGATE_ADMIN=http://127.0.0.1:$ADMIN_PORT \
        RINGGATE_BIN_PATH="$(realpath "${RINGGATE_CMD[0]}")" \
        timeout -k 10 "$NODE_TIMEOUT_S" node --test tests/js/*.test.mjs
    stop_server "$SERVER_PID"
    stage_end
}

stage_browser() {
    resolve_server_cmd
    if ((${#RINGGATE_CMD[@]} > 1)); then stage_skip browser "needs a ringgate binary (pages, load)"; return; fi
    stage_begin browser
    # Each test starts its own gateways (and a `ringgate load`) on free loopback ports.
    RINGGATE_BIN_PATH="$(realpath "${RINGGATE_CMD[0]}")" \
        timeout -k 10 "$BROWSER_TIMEOUT_S" node --test --test-concurrency=1 tests/browser/
    echo "screenshots: $(ls target/browser/*.png | tr '\n' ' ')"
    stage_end
}

# Multi-node: each test file starts its own redis-server(s), gateways and HAProxy on free
# loopback ports and stops them by PID (tests/js/bus/helpers.mjs).
stage_bus() {
    if [[ ! -f tests/js/package.json ]]; then stage_skip bus-test "no tests/js/package.json"; return; fi
    if [[ ${RINGGATE_BIN:-} == *.py ]]; then stage_skip bus-test "needs the ringgate binary"; return; fi
    stage_begin bus-test
    resolve_server_cmd
    # One file at a time: each starts its own Redis servers and gateways, and a Cluster failover
    # on a box loaded by the other files can see more masters time out than the one killed.
    RINGGATE_BIN_PATH="$(realpath "${RINGGATE_CMD[0]}")" \
        timeout -k 10 "$BUS_TIMEOUT_S" node --test --test-concurrency=1 tests/js/bus/*.bus.mjs
    stage_end
}

# --------------------------------------------------------------------- main

echo "ringgate test.sh: root $ROOT, $(date -u +%FT%TZ), SKIP_LINT=${SKIP_LINT:-0} SKIP_CARGO=${SKIP_CARGO:-0}"
stage_deps
stage_lint fmt cargo fmt --all -- --check
stage_lint clippy cargo clippy --all-targets -- -D warnings
stage_cargo cargo-test cargo test --release
stage_cargo build cargo build --release
stage_pytest
stage_autobahn
stage_node
stage_browser
stage_bus
stage_cargo fuzz scripts/fuzz.sh "${FUZZ_SECONDS_PER_TARGET:-20}"

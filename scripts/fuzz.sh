#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ and runs each for a fixed time; fails on any crash.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Works on a stable toolchain without cargo-fuzz: it builds with the flags `cargo fuzz build`
# uses (SanitizerCoverage through -Cpasses=sancov-module, plus AddressSanitizer), with
# RUSTC_BOOTSTRAP=1 so stable rustc takes the one -Z flag. See docs/fuzzing.md.
#
# Each target runs on a working corpus, fuzz/target/corpus/TARGET (new inputs go there, kept
# between local runs), seeded from the checked-in fuzz/corpus/TARGET (never written).
# A crash leaves its input in fuzz/artifacts/TARGET/ and the reproduce command is printed.
#
# Knobs (environment):
#   FUZZ_SANITIZER=address|none  default address (ASan); none is ~2x faster
#   FUZZ_TARGET_DIR=dir          build directory (default fuzz/target)
#   FUZZ_ARGS="..."              extra libFuzzer flags for every target (e.g. -jobs=2)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SECONDS_PER_TARGET=${1:-60}
shift || true
if (($#)); then
    TARGETS=("$@")
else
    TARGETS=()
    for f in fuzz/fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi
SANITIZER=${FUZZ_SANITIZER:-address}
TARGET_DIR=${FUZZ_TARGET_DIR:-$ROOT/fuzz/target}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')

# The flags cargo-fuzz 0.13 passes (`cargo fuzz build -a`), minus nothing: coverage
# instrumentation for libFuzzer, comparison tracing, debug assertions on.
FLAGS=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    -Cllvm-args=-sanitizer-coverage-stack-depth
    -Cllvm-args=-simplifycfg-branch-fold-threshold=0
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)
case $SANITIZER in
    address) FLAGS+=(-Zsanitizer=address) ;;
    none) ;;
    *) echo "FUZZ_SANITIZER must be address or none, not $SANITIZER" >&2; exit 2 ;;
esac

echo "fuzz: targets ${TARGETS[*]}; ${SECONDS_PER_TARGET} s each; sanitizer $SANITIZER; $TRIPLE"
# --target keeps RUSTFLAGS off build scripts and proc macros (they must not be instrumented).
RUSTC_BOOTSTRAP=1 RUSTFLAGS="${FLAGS[*]}" cargo build --manifest-path fuzz/Cargo.toml \
    --release --target "$TRIPLE" --target-dir "$TARGET_DIR" \
    --config 'profile.release.debug="line-tables-only"' \
    $(printf -- '--bin %s ' "${TARGETS[@]}")

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
LOG_DIR=$TARGET_DIR/fuzz-logs
mkdir -p "$LOG_DIR"
declare -A RESULT=()
failed=0
for t in "${TARGETS[@]}"; do
    bin=$TARGET_DIR/$TRIPLE/release/$t
    work=$TARGET_DIR/corpus/$t
    artifacts=$ROOT/fuzz/artifacts/$t/
    log=$LOG_DIR/$t.log
    mkdir -p "$work" "$artifacts"
    stamp=$LOG_DIR/$t.start
    touch "$stamp"
    echo
    echo "==== fuzz $t (${SECONDS_PER_TARGET} s, log $log)"
    rc=0
    # -timeout: one input running 10 s is a hang, reported like a crash.
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts" ${FUZZ_ARGS:-} "$work" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
    # The last status line: "#N DONE cov: C ft: F corp: K/S ... exec/s: E rss: R".
    status=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$status")
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    if ((rc == 0)); then
        RESULT[$t]="ok    execs ${execs:-?} (${speed:-?}/s)  cov ${cov:-?}  ft ${ft:-?}  corpus ${corp:-?}"
        echo "$t: ${RESULT[$t]}"
    else
        failed=1
        RESULT[$t]="FAIL  exit $rc after ${execs:-?} execs"
        echo "$t: FAILED (exit $rc); the panic, if any, and the last lines of $log:"
        grep -m 1 -A 3 'panicked at' "$log" || true
        echo ...
        tail -n 25 "$log"
        find "$artifacts" -type f -newer "$stamp" | while read -r a; do
            echo "reproduce: $bin $a"
        done
    fi
done

echo
echo "==== fuzz summary (${SECONDS_PER_TARGET} s per target, sanitizer $SANITIZER)"
for t in "${TARGETS[@]}"; do printf '  %-15s %s\n' "$t" "${RESULT[$t]}"; done
exit "$failed"

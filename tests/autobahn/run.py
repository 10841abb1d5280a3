#!/usr/bin/env python3
"""Run the Autobahn|Testsuite cases (via kosoku) against an echo endpoint and
compare every case's verdict with tests/autobahn/expected.json.

    run.py URL OUTDIR [--update] [--runs N] [--parallelism P]

URL is the echo endpoint (ws://127.0.0.1:PORT/echo); OUTDIR receives kosoku's
reports (index.json, one JSON + HTML per case; OUTDIR/run-K for K > 1).

Exit status is non-zero, with one line per problem, when
  * a case's behavior or behaviorClose is outside the ACCEPTED sets below,
    whatever expected.json says (an --update cannot bless a failure), or
  * a verdict differs from expected.json, or a case is missing or extra.
    An expected value is one string, or a list of strings for a case whose
    verdict depends on timing (--update --runs N records every verdict seen).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Verdicts that count as conformant.
#   OK             the server did exactly what the case requires.
#   NON-STRICT     a SHOULD-level divergence that RFC 6455 still permits, e.g.
#                  failing on invalid UTF-8 a little after the offending octet
#                  (6.4.*), or failing before echoing a message that preceded
#                  the bad frame in the same read (3.*, 4.*).
#   INFORMATIONAL  the RFC leaves the behaviour open (7.1.6, 7.13.*).
#   UNIMPLEMENTED  an optional feature the server does not offer; only the
#                  permessage-deflate cases (12.*, 13.*) can produce it, and
#                  they are excluded while ringgate declines that extension.
# Everything else (FAILED, ERROR; for the close: FAILED, FAILED BY CLIENT,
# WRONG CODE, UNCLEAN) is a failure.
ACCEPTED_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}

# 12.* and 13.* test permessage-deflate, which ringgate declines.
EXCLUDED_CASES = ["12.*", "13.*"]
# kosoku runs cases concurrently; 4 keeps both cores busy while the slow
# timing cases (5.19, 5.20, 6.4.*) sleep. Measured: ~5 s at 4 vs ~13 s at 1.
DEFAULT_PARALLELISM = 4
# A full run takes seconds; this only stops a wedged server from eating CI.
RUN_TIMEOUT_S = 900

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected.json"
FIELDS = ("behavior", "behaviorClose")


def kosoku_cmd() -> list[str]:
    beside = Path(sys.executable).parent / "kosoku"  # the venv's console script
    exe = str(beside) if beside.exists() else shutil.which("kosoku")
    if exe is None:
        sys.exit("run.py: kosoku not found (pip install -r tests/python/requirements.txt)")
    return [exe]


def run_once(url: str, outdir: Path, parallelism: int) -> dict[str, dict]:
    """Run kosoku once; return case id -> {behavior, behaviorClose, remoteCloseCode}."""
    if outdir.exists():
        shutil.rmtree(outdir)  # never read a previous run's index.json
    cmd = kosoku_cmd() + ["-m", "fuzzingclient", "-p", str(parallelism), "-o", str(outdir)]
    for pattern in EXCLUDED_CASES:
        cmd += ["-x", pattern]
    cmd.append(url)
    print("+", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    # kosoku exits 1 when any case fails by its own standard (which counts
    # UNIMPLEMENTED as failed); the verdicts in index.json decide here.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    index = outdir / "index.json"
    if not index.exists():
        sys.stdout.write(proc.stdout + proc.stderr)
        sys.exit(f"run.py: kosoku exited {proc.returncode} without writing {index}")
    agents = json.loads(index.read_text())
    results: dict[str, dict] = {}
    durations = []
    for cases in agents.values():
        for case_id, entry in cases.items():
            results[case_id] = {f: entry[f] for f in FIELDS}
            results[case_id]["remoteCloseCode"] = entry.get("remoteCloseCode")  # for messages
            durations.append((entry.get("duration", 0), case_id))
    slowest = ", ".join(f"{c} {d} ms" for d, c in sorted(durations, reverse=True)[:5])
    print(f"kosoku: {len(results)} cases in {elapsed:.1f} s (slowest: {slowest})")
    return results


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def as_set(value) -> set[str]:
    return set(value) if isinstance(value, list) else {value}


def conformant(verdict: dict[str, str]) -> bool:
    return (verdict["behavior"] in ACCEPTED_BEHAVIOR
            and verdict["behaviorClose"] in ACCEPTED_CLOSE)


def describe(case_id: str, verdict: dict, expected: dict | None) -> str | None:
    """One line for a case that is non-conformant or differs; None if neither."""
    parts, differs = [], False
    for field in FIELDS:
        want = as_set(expected[field]) if expected else None
        if want is not None and verdict[field] not in want:
            differs = True
            parts.append(f"{field} {verdict[field]} (expected {' or '.join(sorted(want))})")
        else:
            parts.append(f"{field} {verdict[field]}")
    if conformant(verdict) and not differs:
        return None
    tag = "" if conformant(verdict) else " [not conformant]"
    return f"{case_id}: {', '.join(parts)}, server close code " \
           f"{verdict.get('remoteCloseCode')}{tag}"


def compare(results: dict[str, dict], expected: dict) -> list[str]:
    problems = []
    for case_id in sorted(set(results) | set(expected), key=case_key):
        if case_id not in results:
            problems.append(f"{case_id}: expected but not run")
        elif case_id not in expected:
            problems.append(f"{case_id}: ran but not in expected.json "
                            f"({describe(case_id, results[case_id], None) or 'conformant'})")
        elif line := describe(case_id, results[case_id], expected[case_id]):
            problems.append(line)
    return problems


def merge(runs: list[dict[str, dict]]) -> dict:
    """Union of verdicts per case: a string when all runs agree, else a list."""
    merged = {}
    for case_id in sorted(set().union(*runs), key=case_key):
        entry = {}
        for field in FIELDS:
            seen = sorted({r[case_id][field] for r in runs if case_id in r})
            entry[field] = seen[0] if len(seen) == 1 else seen
        merged[case_id] = entry
    return merged


def dump_expected(expected: dict) -> str:
    """JSON with one case per line, in case order, so diffs read per case."""
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in expected.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--update", action="store_true",
                    help="rewrite expected.json from this run (failures still fail)")
    ap.add_argument("--runs", type=int, default=1,
                    help="run N times; with --update, record every verdict seen")
    ap.add_argument("--parallelism", "-p", type=int, default=DEFAULT_PARALLELISM)
    args = ap.parse_args()

    t0 = time.monotonic()
    runs = [run_once(args.url, args.outdir if args.runs == 1 else args.outdir / f"run-{k}",
                     args.parallelism) for k in range(1, args.runs + 1)]

    problems: list[str] = []
    if args.update:
        merged = merge(runs)
        EXPECTED.write_text(dump_expected(merged))
        print(f"run.py: wrote {EXPECTED} ({len(merged)} cases)")
        for run in runs:
            problems += [p for c, v in run.items() if (p := describe(c, v, None))]
    else:
        if not EXPECTED.exists():
            sys.exit(f"run.py: {EXPECTED} missing; create it with --update")
        expected = json.loads(EXPECTED.read_text())
        for k, run in enumerate(runs, 1):
            problems += [(f"run {k}: " if args.runs > 1 else "") + p
                         for p in compare(run, expected)]

    for p in dict.fromkeys(problems):  # dedupe, keep order
        print("DIFF", p)
    total = sum(len(r) for r in runs)
    verdict = "FAILED" if problems else "OK"
    print(f"autobahn: {verdict}: {total} case results, {len(problems)} problems, "
          f"{time.monotonic() - t0:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

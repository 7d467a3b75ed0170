#!/usr/bin/env python3
"""Run the flaky-prone tests N times and count the failures of each, to see flakiness before CI does.

    python tools/test_repeat.py [-n 3] [-m "slow or signals"] [pytest args ...]

Each round is one ``pytest`` process over the tests marked ``slow`` (several processes, servers,
browsers) or ``signals`` (set by tests/conftest.py on every test that sends or handles a signal),
with a JUnit XML report per round; at the end a table of every test that failed at least once,
with its count out of N. Exits 0 only when no test failed in any round (``make test-repeat N=3``).
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def outcomes(junit_xml: Path) -> dict[str, str]:
    """``{test id: "passed" | "failed" | "error" | "skipped"}`` from one pytest JUnit XML report."""
    out = {}
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        out[test_id] = {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed"
    return out


def run_round(i: int, marker: str, extra: list[str], folder: Path) -> dict[str, str]:
    """One pytest process; its per-test outcomes (a crashed round with no report counts as an error)."""
    report = folder / f"round{i}.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
           f"--junitxml={report}", *extra]
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=ROOT)
    print(f"round {i}: pytest exited {code} after {time.monotonic() - started:.0f} s", flush=True)
    if not report.exists():
        return {f"round {i} (pytest itself)": "error"}
    return outcomes(report)


def summarise(rounds: list[dict[str, str]]) -> int:
    """Print failures per test over the rounds; the number of (test, round) failures."""
    failed = collections.Counter(t for r in rounds for t, o in r.items() if o in ("failed", "error"))
    tests = sorted({t for r in rounds for t in r})
    print(f"\n{len(tests)} tests x {len(rounds)} rounds; failures per test:")
    for test_id in sorted(failed, key=lambda t: (-failed[t], t)):
        print(f"  {failed[test_id]}/{len(rounds)}  {test_id}")
    total = sum(failed.values())
    print(f"{total} failures in total" + ("" if total else ": every test passed in every round"))
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--rounds", type=int, default=3)
    ap.add_argument("-m", "--marker", default="slow or signals", help="pytest -m expression of the tests to repeat")
    args, extra = ap.parse_known_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="rftbench-repeat-") as tmp:
        rounds = [run_round(i + 1, args.marker, extra, Path(tmp)) for i in range(args.rounds)]
    return 1 if summarise(rounds) else 0


if __name__ == "__main__":
    sys.exit(main())

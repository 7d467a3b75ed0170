"""A sweep says on stderr, one line per grid point, what happened to each run and the counts so
far; stdout keeps only the JSON."""
from __future__ import annotations

import json

from grid_helpers import write_grid

from rftbench.cli import main


def test_each_grid_point_gets_a_line_with_its_status_and_the_counts(workdir, capsys, monkeypatch):
    monkeypatch.setenv("RFTBENCH_PROGRESS", "plain")
    spec = write_grid(workdir / "grid.yaml", n=2, modes={1: 1})  # r1 raises on purpose
    assert main(["sweep", str(spec), "--json"]) == 1
    cap = capsys.readouterr()
    out = json.loads(cap.out)  # nothing but the JSON on stdout
    assert [r["status"] for r in out["runs"]] == ["finished", "failed"]
    lines = [line for line in cap.err.splitlines() if "grid run" in line]
    assert lines[0].endswith("grid run 1/2 r0: finished; so far 1 finished"), lines
    assert "grid run 2/2 r1: failed (RuntimeError: fault schedule: failing on purpose" in lines[1], lines
    assert lines[1].endswith("so far 1 finished, 1 failed"), lines
    assert main(["sweep", str(spec), "--json"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "grid run" in line]
    assert lines[0].endswith("grid run 1/2 r0: skipped; so far 1 skipped"), lines

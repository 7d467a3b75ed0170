"""A 6-run grid through the local, submitit (local executor) and Ray (local instance) launchers:
every run lands once in MLflow, a re-run skips what is done, a killed worker's run is resumed
(and only it), a failing run leaves the others finished, and launchers finish each other's grids."""
from __future__ import annotations

import json

import pytest
from grid_helpers import runs_by_name, write_grid

from rftbench.cli import main


def sweep(capsys, *args) -> tuple[int, dict]:
    rc = main(["sweep", *map(str, args), "--json"])
    return rc, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_local_workers_kill_and_fail(workdir, embedded_cache, capsys, monkeypatch):
    marker = workdir / "kill-once"
    marker.write_text("")
    monkeypatch.setenv("RFTBENCH_TEST_KILL_MARKER", str(marker))
    spec = write_grid(workdir / "grid.yaml", modes={2: 2, 4: 1})  # r2 is SIGKILLed once, r4 always raises
    rc, out = sweep(capsys, spec, "--launcher", "local", "--workers", "2")
    status = {r["name"]: r["status"] for r in out["runs"]}
    assert rc == 1 and not marker.exists()
    assert status == {"r0": "finished", "r1": "finished", "r2": "failed", "r3": "finished", "r4": "failed",
                      "r5": "finished"}
    assert "SIGKILL" in next(r["message"] for r in out["runs"] if r["name"] == "r2")
    assert "failing on purpose" in next(r["message"] for r in out["runs"] if r["name"] == "r4")
    runs = runs_by_name()
    assert runs["r2"][0].info.status == "RUNNING" and runs["r4"][0].info.status == "FAILED"

    rc, out = sweep(capsys, spec, "--launcher", "local", "--workers", "2")
    status = {r["name"]: r["status"] for r in out["runs"]}
    assert status == {"r0": "skipped", "r1": "skipped", "r2": "resumed", "r3": "skipped", "r4": "failed",
                      "r5": "skipped"}
    assert out["summary"]["resumed"] == 1 and rc == 1
    runs = runs_by_name()
    assert all(len(v) == 1 for v in runs.values()) and len(runs) == 6  # every run landed once
    assert sorted(n for n, v in runs.items() if v[0].info.status == "FINISHED") == ["r0", "r1", "r2", "r3", "r5"]
    resumed = json.loads(runs["r2"][0].data.tags["rftbench.resumed_from"])
    assert resumed["batch"] > 0  # from its mid-epoch checkpoint, not from scratch
    assert "rftbench.resumed_from" not in runs["r0"][0].data.tags


@pytest.mark.slow
def test_submitit_then_ray_then_local_finish_one_grid(workdir, embedded_cache, capsys):
    ray = pytest.importorskip("ray")
    pytest.importorskip("submitit")
    spec = write_grid(workdir / "grid.yaml")
    rc, out = sweep(capsys, spec, "--launcher", "submitit", "--submitit-cluster", "local",
                    "--only", "r0", "--only", "r1", "--only", "r2")
    assert rc == 0 and [r["status"] for r in out["runs"]] == ["finished"] * 3
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        rc, out = sweep(capsys, spec, "--launcher", "ray")
    finally:
        ray.shutdown()
    assert rc == 0 and [r["status"] for r in out["runs"]] == ["skipped"] * 3 + ["finished"] * 3
    runs = runs_by_name()
    assert sorted(runs) == [f"r{i}" for i in range(6)] and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" and "rftbench.er_name" in v[0].data.tags for v in runs.values())
    rc, out = sweep(capsys, spec, "--launcher", "local")
    assert rc == 0 and out["summary"] == {"finished": 0, "skipped": 6, "resumed": 0, "failed": 0, "failures": []}
    assert len(runs_by_name()) == 6

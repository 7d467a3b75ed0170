"""The Ray launcher on a real two-node Ray cluster on loopback (``ray start`` on 127.0.0.2 and
127.0.0.3, token authentication; :mod:`ray_cluster`): the toy grid lands every run once with
tasks on both nodes, a rerun skips all, a worker killed with SIGKILL is resumed by the next
sweep, and a refused token is a clear LauncherError within seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from grid_helpers import runs_by_name, write_grid
from ray_cluster import RayCluster, unavailable


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    why = unavailable() or (None if os.environ.get("RFTBENCH_TEST_CLUSTERS") else
                            "real-cluster tests run with `make test-cluster` (RFTBENCH_TEST_CLUSTERS=1)")
    if why:
        pytest.skip(why)
    cluster = RayCluster(cpus_per_node=1).start()
    yield cluster
    cluster.stop()


def sweep(cluster, *args, env: dict | None = None) -> tuple[int, dict, str]:
    """``rftbench sweep`` as its own process (Ray reads its authentication settings once per
    process, so a driver gets them from its environment, as a user's would)."""
    cmd = [sys.executable, "-m", "rftbench", "sweep", *map(str, args), "--launcher", "ray", "--ray-address",
           cluster.address, "--json"]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", **cluster.env, **(env or {})},
                         capture_output=True, text=True, timeout=600)
    try:
        out = json.loads(res.stdout)
    except json.JSONDecodeError:
        out = {}
    return res.returncode, out, res.stderr


def test_grid_lands_once_on_both_nodes_a_killed_worker_resumes_and_a_rerun_skips(ray_cluster, workdir):
    marker = workdir / "kill-once"
    marker.write_text("")
    spec = write_grid(workdir / "grid.yaml", modes={3: 2})  # r3's worker SIGKILLs itself once
    rc, out, err = sweep(ray_cluster, spec, env={"RFTBENCH_TEST_KILL_MARKER": str(marker)})
    status = {r["name"]: r["status"] for r in out["runs"]}
    assert rc == 1 and status == {**{f"r{i}": "finished" for i in range(6)}, "r3": "failed"}, (out, err[-3000:])
    assert "worker" in next(r for r in out["runs"] if r["name"] == "r3")["message"].lower()
    rc, out, err = sweep(ray_cluster, spec)
    assert rc == 0 and {r["name"]: r["status"] for r in out["runs"]} == {
        **{f"r{i}": "skipped" for i in range(6)}, "r3": "resumed"}, (out, err[-3000:])
    runs = runs_by_name()
    assert sorted(runs) == [f"r{i}" for i in range(6)] and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" for v in runs.values())
    assert {v[0].data.tags["rftbench.ray.node_ip"] for v in runs.values()} == {"127.0.0.2", "127.0.0.3"}
    assert json.loads(runs["r3"][0].data.tags["rftbench.resumed_from"])["batch"] > 0
    rc, out, err = sweep(ray_cluster, spec)
    assert rc == 0 and out["summary"]["skipped"] == 6


def test_a_refused_token_is_a_launcher_error_within_seconds(ray_cluster, workdir):
    spec = write_grid(workdir / "grid.yaml", n=1)
    wrong = workdir / "wrong_token"
    wrong.write_text("0" * 64)
    for env in ({"RAY_AUTH_TOKEN_PATH": str(wrong)}, {"RAY_AUTH_MODE": "disabled"}):  # a wrong token, none at all
        t0 = time.monotonic()
        rc, out, err = sweep(ray_cluster, spec, env=env)
        assert rc == 2 and time.monotonic() - t0 < 30, err[-2000:]
        assert "refused" in err and "RAY_AUTH_MODE=token" in err and "Traceback" not in err, err[-2000:]

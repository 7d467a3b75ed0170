"""One grid swept at the same time by SLURM (the real single-node cluster of :mod:`slurm_cluster`,
no accounting) and by Ray (the real two-node cluster of :mod:`ray_cluster`), as two users on two
front ends might: every run is trained exactly once, by one engine or the other, and both
sweeps end with every run accounted for."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from grid_helpers import runs_by_name, write_grid
from ray_cluster import RayCluster
from ray_cluster import unavailable as ray_unavailable
from slurm_cluster import SlurmCluster
from slurm_cluster import unavailable as slurm_unavailable

pytestmark = pytest.mark.slow


@pytest.fixture
def engines(workdir):
    why = slurm_unavailable() or ray_unavailable() or (
        None if os.environ.get("RFTBENCH_TEST_CLUSTERS") else
        "real-cluster tests run with `make test-cluster` (RFTBENCH_TEST_CLUSTERS=1)")
    if why:
        pytest.skip(why)
    slurm = SlurmCluster(workdir / "slurm", accounting=False, cpus=2, mem_mb=12000).start()
    try:
        ray = RayCluster(cpus_per_node=1).start()
    except BaseException:
        slurm.stop()
        raise
    yield slurm, ray
    subprocess.run(["scancel", "-u", "root"], env={**slurm.env, "PATH": "/usr/bin:/bin"}, check=False)
    ray.stop()
    slurm.stop()


def test_a_grid_swept_by_slurm_and_ray_at_once_trains_every_run_once(engines, workdir):
    slurm, ray = engines
    spec = write_grid(workdir / "grid.yaml")
    base = [sys.executable, "-m", "rftbench", "sweep", str(spec), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*base, "--launcher", "submitit", "--submitit-cluster", "slurm"],
                              env={**env, **slurm.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([*base, "--launcher", "ray", "--ray-address", ray.address],
                              env={**env, **ray.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    reports = [json.loads(out) for out, _ in outs]
    finished = sorted(r["name"] for rep in reports for r in rep["runs"] if r["status"] == "finished")
    assert finished == [f"r{i}" for i in range(6)], reports  # each trained by exactly one of the two
    runs = runs_by_name()
    assert sorted(runs) == [f"r{i}" for i in range(6)] and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" for v in runs.values())
    for v in runs.values():  # and the engine that trained it says so
        tags = v[0].data.tags
        engine_tags = sorted(k for k in tags if k.startswith(("rftbench.slurm.", "rftbench.ray.")))
        assert ("rftbench.slurm.job_id" in tags) != ("rftbench.ray.node_ip" in tags), engine_tags

"""Run identities and claims: what a sweep does with each run, and two sweeps at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import tiny_config
from grid_helpers import runs_by_name, write_grid

from rftbench.cli import main
from rftbench.experiments.gridrun import CLAIM_PREFIX, PointOptions, decide, live_claims, run_identity


def fake_run(status: str, tags: dict, run_id: str = "x") -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(status=status, run_id=run_id, start_time=0),
                           data=SimpleNamespace(tags=tags))


def test_identity_is_the_resolved_config_without_display_keys():
    a = tiny_config()
    assert run_identity(a) == run_identity(tiny_config(train__progress="off"))
    assert run_identity(a) != run_identity(tiny_config(seed=1))
    assert run_identity(a) != run_identity(tiny_config(train__lr=0.03))


def test_decide_skips_resumes_and_retries_only_when_asked():
    opts = PointOptions()
    done = fake_run("FINISHED", {"rftbench.er_name": "ER"})
    killed = fake_run("KILLED", {})
    failed = fake_run("FAILED", {"rftbench.error": "boom"})
    dead_claim = {CLAIM_PREFIX + "n1": json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 7, "t": 1.0})}
    live_claim = {CLAIM_PREFIX + "n2": json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                                   "t": time.time()})}
    assert decide([], opts).action == "new"
    assert decide([done, killed], opts).action == "skip"
    assert decide([killed], opts).action == "resume"
    assert decide([fake_run("RUNNING", dead_claim)], opts).action == "resume"  # a dead claimant's run
    assert decide([fake_run("RUNNING", live_claim)], opts).action == "busy"
    assert decide([failed], opts).action == "failed" and "boom" in decide([failed], opts).message
    assert decide([failed], PointOptions(retry_failed=True)).action == "resume"
    other_host = {CLAIM_PREFIX + "n3": json.dumps({"host": "elsewhere", "pid": 1, "t": time.time() - 10})}
    assert live_claims([fake_run("RUNNING", other_host)], stale_after_s=60)
    assert not live_claims([fake_run("RUNNING", other_host)], stale_after_s=5)


def test_launcher_flags_need_their_launcher(workdir, capsys):
    spec = write_grid(workdir / "grid.yaml")
    assert main(["sweep", str(spec), "--slurm-partition", "gpu"]) == 2
    assert "--launcher submitit" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--ray-address", "127.0.0.1:1"]) == 2


def test_missing_extra_and_silent_ray_address(monkeypatch):
    from rftbench.errors import LauncherError
    from rftbench.launch import require_extra
    from rftbench.launch.ray_launcher import check_address

    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(LauncherError, match=r"pip install 'rftbench\[submitit\]'"):
        require_extra("submitit", "submitit")
    t0 = time.perf_counter()
    with pytest.raises(LauncherError, match="did not answer"):
        check_address("127.0.0.1:1")
    assert time.perf_counter() - t0 < 6


def test_dry_run_and_list_say_what_would_happen(workdir, capsys):
    spec = write_grid(workdir / "grid.yaml", n=2)
    assert main(["sweep", str(spec), "--dry-run", "--json"]) == 0
    assert [r["action"] for r in json.loads(capsys.readouterr().out)] == ["train", "train"]
    assert main(["sweep", str(spec), "--list", "--check-inputs", "--json"]) == 0
    inputs = json.loads(capsys.readouterr().out)["inputs"]
    assert {(i["kind"], i["ok"]) for i in inputs} == {("dataset", True), ("weights", True)}


def test_list_says_which_inputs_are_missing(workdir, capsys, monkeypatch):
    monkeypatch.setenv("RFTBENCH_DATA", str(workdir / "no-data"))
    paper = Path(__file__).parents[2] / "benchmarks" / "grids" / "paper_grid.yaml"
    # no run of the selection has its dataset: the listing says so and exits 1
    assert main(["sweep", str(paper), "--list", "--check-inputs", "--json", "--only", "resnet50-cub200-*"]) == 1
    inputs = {i["kind"]: i for i in json.loads(capsys.readouterr().out)["inputs"]}
    assert not inputs["dataset"]["ok"] and "CUB_200_2011" in inputs["dataset"]["problem"]
    assert inputs["weights"]["ok"] or "timm.create_model" in inputs["weights"]["problem"]


@pytest.mark.slow
def test_two_concurrent_sweeps_train_every_run_once(workdir, embedded_cache):
    spec = write_grid(workdir / "grid.yaml", n=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "rftbench", "sweep", str(spec), "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=400)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    finished = [r["name"] for o in outs for r in o["runs"] if r["status"] == "finished"]
    assert sorted(finished) == ["r0", "r1", "r2", "r3"]  # each trained by exactly one of the two
    runs = runs_by_name()
    assert all(len(v) == 1 and v[0].info.status == "FINISHED" for v in runs.values()) and len(runs) == 4
    assert not any(k.startswith(CLAIM_PREFIX) for v in runs.values() for k in v[0].data.tags)  # released

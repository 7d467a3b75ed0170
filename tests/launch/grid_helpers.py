"""The 6-run toy grid of the launcher tests (embedded default: 1 epoch, tiny eval, no AutoAttack)."""
from __future__ import annotations

from pathlib import Path

import yaml

PLUGIN = str(Path(__file__).with_name("fault_schedule.py"))


def write_grid(path: Path, n: int = 6, modes: dict[int, int] | None = None) -> Path:
    """A grid of ``n`` seeds; ``modes`` {run index: fault mode} makes runs fail on purpose."""
    modes = modes or {}
    spec = {
        "name": "r{run}",
        "base": {"experiment": "scale", "plugins": [PLUGIN], "model": {"name": "small_cnn", "pretrained": True},
                 "data": {"name": "digits", "batch_size": 64}, "threat": {"eps": 0.2}, "attack": {"steps": 1},
                 "schedule": {"name": "fault"},
                 "train": {"epochs": 1, "lr": 0.02, "checkpoint_every_steps": 2, "progress": "off"},
                 "eval": {"num_points": 2, "sweep_steps": 1, "n_samples": 32, "autoattack": {"enabled": False}}},
        "axes": {"run": {str(i): {"seed": i, "schedule.params.mode": modes.get(i, 0)} for i in range(n)}},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def runs_by_name(experiment: str = "scale") -> dict[str, list]:
    """Every (not deleted) MLflow run of the experiment, by run name."""
    from rftbench.tracking.store import client_for

    client = client_for()
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        out.setdefault(run.info.run_name, []).append(run)
    return out

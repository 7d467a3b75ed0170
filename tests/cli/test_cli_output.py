"""What the commands print for a person: `train`'s summary, tables in full when piped,
`sweep --list`'s exit status, and the optuna-dashboard the README points to."""
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import tiny_config
from rftbench.cli import main

ROOT = Path(__file__).parents[2]


def _lines(text: str) -> dict[str, str]:
    """``key: value`` lines by key (the first colon splits)."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def test_train_prints_a_summary_whose_evaluate_command_works(tmp_path, capsys, workdir):
    from rftbench.tracking.store import client_for

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(tiny_config(train__epochs=1, train__log_mlflow_model=False).model_dump()))
    assert main(["train", str(p)]) == 0
    text = capsys.readouterr().out
    assert "{'" not in text and "'run_id'" not in text  # not a Python dict
    kv = _lines(text)
    run_id = kv["run"].split()[0]
    run = client_for().get_run(run_id)
    assert run.info.status == "FINISHED" and "status FINISHED" in kv["run"]
    assert Path(kv["checkpoint"]).is_file() and Path(kv["run dir"]).is_dir()
    assert Path(kv["checkpoint"]).parent == Path(kv["run dir"])
    assert f"clean {run.data.metrics['eval/acc_clean']:.4f}" in kv["evaluation"]
    assert "train/loss" in kv["last epoch"]
    assert kv["leaderboard"] == "rftbench leaderboard --experiment tests"
    argv = shlex.split(kv["evaluate"])
    assert argv[:2] == ["rftbench", "evaluate"] and f"file:{kv['checkpoint']}" in argv
    assert main(argv[1:] + ["--no-log", "--json"]) == 0  # the printed next step runs as printed


def test_tables_are_not_cut_when_piped(capsys):
    assert main(["datasets", "list"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text  # rich's ellipsis: a cell cut to fit 80 columns
    rows = [line for line in text.splitlines() if "fashion_mnist" in line]
    assert rows and "Fashion-MNIST" in rows[0]  # name and title on one line
    assert max(len(line) for line in text.splitlines()) > 80


def _grid(path: Path, datasets: dict[str, dict], root: Path) -> Path:
    spec = {"name": "{dataset}-a-run-name-long-enough-to-be-cut-at-eighty-columns-{dataset}",
            "base": {"experiment": "list", "model": {"name": "small_cnn", "pretrained": False},
                     "data": {"root": str(root)}, "train": {"epochs": 1}},
            "axes": {"dataset": datasets}}
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_list_exits_1_when_no_run_can_start_and_0_when_one_can(workdir, capsys):
    empty = workdir / "no-data"
    empty.mkdir()
    missing = {"cifar": {"data.name": "cifar10"}, "fashion": {"data.name": "fashion_mnist"}}
    spec = _grid(workdir / "none.yaml", missing, empty)
    assert main(["sweep", str(spec), "--list"]) == 1
    out, err = capsys.readouterr()
    assert "none of the 2 runs" in err and "missing" in out
    assert "fashion-a-run-name-long-enough-to-be-cut-at-eighty-columns-fashion" in out  # in full
    assert main(["sweep", str(spec), "--list", "--json", "--check-inputs"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_runnable"] == 0 and not any(r["inputs_present"] for r in doc["runs"])

    spec = _grid(workdir / "one.yaml", {**missing, "digits": {"data.name": "digits"}}, empty)
    assert main(["sweep", str(spec), "--list", "--json", "--check-inputs"]) == 0
    doc = json.loads(capsys.readouterr().out)
    present = {r["dataset"]: r["inputs_present"] for r in doc["runs"]}
    assert present == {"cifar10": False, "fashion_mnist": False, "digits": True} and doc["n_runnable"] == 1
    assert main(["sweep", str(spec), "--list", "--only", "nothing-matches-*"]) == 1
    assert "no run of" in capsys.readouterr().err


def test_optuna_dashboard_is_installed_by_make_install():
    import optuna_dashboard

    assert optuna_dashboard.__version__
    exe = Path(sys.executable).parent / "optuna-dashboard"  # the README's command, in this environment
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == optuna_dashboard.__version__
    install = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "-e '.[" in line)
    assert "dashboard" in install.split("-e '.[", 1)[1].split("]", 1)[0].split(",")

"""Every write is atomic; a full disk is one clear error naming the path and the space needed,
leaves the previous file and no temporary file, ends the run FAILED, and the run resumes once
space is freed (a real small tmpfs where it can be mounted, else a simulated ENOSPC)."""
import errno
import os
import subprocess

import pytest
import torch
import yaml
from conftest import tiny_config

from rftbench.atomic import atomic_write, atomic_write_bytes
from rftbench.errors import DiskFullError


def _enospc(*a, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_simulated_enospc_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.pt"
    atomic_write_bytes(target, b"previous")

    def half_then_full(f):
        f.write(b"x" * 1000)
        _enospc()

    with pytest.raises(DiskFullError) as info:
        atomic_write(target, half_then_full, size_hint=5 * 2**20)
    msg = str(info.value)
    assert str(target) in msg and "needs about 5.0 MB" in msg and "free on that filesystem" in msg
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_other_write_errors_propagate_and_clean_up(tmp_path):
    target = tmp_path / "x.json"

    def boom(f):
        f.write(b"partial")
        raise ValueError("serialiser failed")

    with pytest.raises(ValueError):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []


def test_training_state_and_model_saves_are_atomic_under_enospc(tmp_path, monkeypatch):
    from rftbench.models import create_model, save_checkpoint
    from rftbench.training.state import TrainingState, rng_state

    model = create_model("small_cnn", 3, pretrained=False)
    st = TrainingState(model=model.net.state_dict(), optimizer={}, lr_schedule={}, rng=rng_state(), epoch=1)
    st.save(tmp_path / "state.pt")
    save_checkpoint(model, tmp_path / "model.safetensors")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "fsync", _enospc)  # the data reaches the disk at fsync: it fails there
    with pytest.raises(DiskFullError, match="state.pt"):
        st.save(tmp_path / "state.pt")
    with pytest.raises(DiskFullError, match="model.safetensors"):
        save_checkpoint(model, tmp_path / "model.safetensors")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_curve_png_and_evaluation_state_are_atomic_under_enospc(tmp_path, monkeypatch):
    from rftbench.evaluation.state import read_state, write_state
    from rftbench.plots import plot_robustness_curves

    png = plot_robustness_curves({"m": ([0.0, 0.1], [0.9, 0.5])}, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_state(tmp_path / "eval.state.json", {"k": 1}, [{"block": 0}], {})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError, match="curve.png"):
        plot_robustness_curves({"m": ([0.0, 0.1], [0.8, 0.4])}, tmp_path / "curve.png")
    with pytest.raises(DiskFullError, match="eval.state.json"):
        write_state(tmp_path / "eval.state.json", {"k": 1}, [{"block": 0}, {"block": 1}], {})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # previous files, no temporary
    assert read_state(tmp_path / "eval.state.json", {"k": 1})[0] == [{"block": 0}]


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=800k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_disk_full_on_a_real_tmpfs_fails_the_run_clearly_then_resumes(workdir, small_tmpfs, capsys):
    from rftbench.cli import main
    from rftbench.tracking.store import client_for

    cfg = tiny_config(train__epochs=2, output_dir=str(small_tmpfs / "runs"))
    (workdir / "c.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    # epoch 1's state.pt (~0.55 MB) fits in 800 kB; epoch 2's cannot sit beside it
    assert main(["train", "c.yaml", "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "disk full while writing" in err and "state.pt" in err and "needs about" in err
    assert "Traceback" not in err
    client = client_for()
    run = client.search_runs([client.get_experiment_by_name("tests").experiment_id])[0]
    assert run.info.status == "FAILED" and "DiskFullError" in run.data.tags["rftbench.error"]
    run_dir = small_tmpfs / "runs" / run.info.run_id
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    saved = torch.load(run_dir / "state.pt", weights_only=True)
    assert saved["epoch"] == 1  # the previous checkpoint is intact
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_tmpfs)], check=True)  # space freed
    assert main(["train", "--resume", run.info.run_id, "--no-eval", "--json"]) == 0
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rftbench.resumed_from"] == '{"epoch": 1, "batch": 0}'
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert sorted(set(steps)) == [0, 1]  # epoch 2 again after the failed checkpoint (same step)

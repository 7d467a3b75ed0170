"""The study's figures (rftbench.tuning.report): written atomically, so a figure that fails
leaves no half-written PNG or HTML where the artifact goes. An in-memory study, no training."""
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import optuna

from rftbench.tuning.report import write_visualizations


def _study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) - t.suggest_float("b", 0, 1) ** 2, n_trials=6)
    return study


def test_figures_are_written_whole(tmp_path):
    status = write_visualizations(_study(), [SimpleNamespace(name="robust_acc")], tmp_path)
    assert status["optimization_history"] == "ok"
    png, html = tmp_path / "optimization_history.png", tmp_path / "optimization_history.html"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert html.read_text().rstrip().endswith("</html>")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failing_savefig_leaves_no_torn_png(tmp_path, monkeypatch):
    def torn(fig, target, **kw):  # half a PNG written, then the renderer fails
        if hasattr(target, "write"):
            target.write(b"\x89PNG\r\n\x1a\n half a figure")
        else:
            Path(target).write_bytes(b"\x89PNG\r\n\x1a\n half a figure")
        raise ValueError("renderer died")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", torn)
    status = write_visualizations(_study(), [SimpleNamespace(name="robust_acc")], tmp_path)
    assert status["optimization_history"] == "skipped: ValueError: renderer died"
    assert not list(tmp_path.glob("*.png"))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert (tmp_path / "optimization_history.html").exists()  # the HTML came first and is whole

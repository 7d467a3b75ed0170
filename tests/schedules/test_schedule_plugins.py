"""Third-party schedules: from a user's file (``--plugin`` / ``plugins:``) and from an installed
entry point (a real ``*.dist-info`` on sys.path, no pip), training with them, tuning exactly
their declared space, and duplicate names that say where both definitions live."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from conftest import tiny_config
from rftbench.cli import main
from rftbench.errors import DuplicateNameError, RftbenchError
from rftbench.registry import load_plugin_file
from rftbench.scheduling import SCHEDULES, create_schedule
from rftbench.tracking.store import client_for

REPO = Path(__file__).resolve().parents[2]

TRIANGLE = '''\
"""A third-party schedule: ``cycles`` triangles of eps per run (not monotone)."""
from rftbench.scheduling import Param, Schedule, register_schedule

{decorator}
class {cls}(Schedule):
    reference = "a test plugin"
    monotone = False
    params = (Param("peak", 0.5, 0.1, 0.9, help="where in each cycle eps peaks"),
              Param("cycles", 1, 1, 4, kind="int"),
              Param("power", 1.0, 0.5, 4.0, log=True))

    def alpha(self, progress):
        frac = (progress * self.values["cycles"]) % 1.0
        peak = self.values["peak"]
        up = frac / peak if frac < peak else (1.0 - frac) / (1.0 - peak)
        return up ** self.values["power"]
'''

#: the plugin's shape, written independently of its code
def triangle_eps(step, total, target, peak=0.5, cycles=1, power=1.0):
    frac = math.fmod(step / total * cycles, 1.0)
    up = frac / peak if frac < peak else (1 - frac) / (1 - peak)
    return target * min(1.0, up) ** power


def plugin_file(path: Path, name: str | None, cls: str = "Triangle") -> Path:
    """Write the triangle plugin; ``name=None`` leaves it unregistered (for entry points)."""
    path.write_text(TRIANGLE.format(decorator=f"@register_schedule({name!r})" if name else "", cls=cls))
    return path


def install_dist(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
    """A minimal installed distribution: ``<dist>-1.0.dist-info/{METADATA,entry_points.txt}`` plus
    its modules, in ``root`` (which the caller puts on sys.path)."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[rftbench.schedules]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(src)
    return root


def tiny_plugin_config(schedule_name: str, **overrides):
    """The smallest run that still trains, validates and evaluates (a few seconds of compute).
    Random init: the schedule is under test, not transfer, so no pretraining is needed."""
    opts = dict(name=f"plugin-{schedule_name}", schedule={"name": schedule_name, "params": {}}, train__epochs=1,
                model__pretrained=False,
                data__val_fraction=0.5, data__batch_size=64, attack__steps=1, eval__num_points=2,
                eval__sweep_steps=2, eval__n_samples=32, train__val_samples=32)
    opts.update(overrides)
    return tiny_config(**opts)


def expected_attack_stats(schedule, n_train: int, batch_size: int, target: float) -> tuple[int, float]:
    """Attack steps and the sample-weighted mean eps of one epoch, from the schedule alone."""
    steps = math.ceil(n_train / batch_size)
    sizes = [batch_size] * (steps - 1) + [n_train - batch_size * (steps - 1)]
    eps = [schedule(s, steps, target) for s in range(steps)]
    return sum(e > 0 for e in eps), sum(e * n for e, n in zip(eps, sizes)) / n_train


@pytest.fixture
def restore_schedules():
    """Unregister whatever a test registers, so that tests do not see each other's plugins."""
    before = set(SCHEDULES.names())
    yield
    for name in set(SCHEDULES.names()) - before:
        SCHEDULES.unregister(name)


def run_cli(args, cwd, pythonpath=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "rftbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


# ---- user files ------------------------------------------------------------------------

def test_file_plugin_via_cli_option_is_listed_and_plotted(tmp_path, capsys, restore_schedules):
    f = plugin_file(tmp_path / "my_triangle.py", "my_triangle")
    assert main(["--plugin", str(f), "schedules", "list", "--json"]) == 0
    items = {it["name"]: it for it in json.loads(capsys.readouterr().out)}
    it = items["my_triangle"]
    assert it["origin"] == "file" and it["source"] == str(f.resolve())
    assert it["monotone"] is False
    assert [(p["name"], p["kind"], p["log"]) for p in it["params"]] == [
        ("peak", "float", False), ("cycles", "int", False), ("power", "float", True)]
    out = tmp_path / "tri.png"
    assert main(["--plugin", str(f), "schedules", "plot", "my_triangle:cycles=3,peak=0.25", "linear",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    s = create_schedule("my_triangle", {"cycles": 3, "peak": 0.25, "power": 2})
    for step in range(0, 90, 7):
        assert s.eps_at(step, 90, 0.2) == pytest.approx(triangle_eps(step, 90, 0.2, 0.25, 3, 2.0), abs=1e-12)


def test_file_plugin_taking_a_builtin_name_names_both_files(tmp_path, restore_schedules):
    f = plugin_file(tmp_path / "clash.py", "linear")
    with pytest.raises(DuplicateNameError) as ei:
        load_plugin_file(f)
    msg = str(ei.value)
    assert "schedule 'linear' is registered twice" in msg
    assert str(REPO / "rftbench" / "schedules" / "linear.py") in msg and str(f.resolve()) in msg
    assert SCHEDULES.entry("linear").source == str(REPO / "rftbench" / "schedules" / "linear.py")


def test_two_files_registering_one_name_name_both_files(tmp_path, restore_schedules):
    a = plugin_file(tmp_path / "a_tri.py", "shared_tri")
    b = plugin_file(tmp_path / "b_tri.py", "shared_tri")
    load_plugin_file(a)
    with pytest.raises(DuplicateNameError, match=rf"in {a.resolve()} and in {b.resolve()}"):
        load_plugin_file(b)


def test_cli_plugin_clashing_before_builtins_load_exits_2_naming_both(tmp_path):
    # a fresh process: the plugin registers first, the clash shows when the built-ins load
    f = plugin_file(tmp_path / "early_clash.py", "cosine")
    r = run_cli(["--plugin", str(f), "schedules", "list"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "schedule 'cosine' is registered twice" in r.stderr
    assert str(f.resolve()) in r.stderr and str(REPO / "rftbench" / "schedules" / "cosine.py") in r.stderr


# ---- installed entry points ------------------------------------------------------------

def test_entry_point_discovered_lazily_in_a_fresh_process(tmp_path):
    root = install_dist(tmp_path / "site", "rftbench-wave", {"wave": "rft_ep_wave_cli:Wave"},
                        {"rft_ep_wave_cli": TRIANGLE.format(decorator="", cls="Wave")})
    r = run_cli(["schedules", "list", "--json"], cwd=tmp_path, pythonpath=[root])
    assert r.returncode == 0, r.stderr
    items = {it["name"]: it for it in json.loads(r.stdout)}
    assert items["wave"]["origin"] == "entry point"
    assert "entry point wave = rft_ep_wave_cli:Wave (distribution rftbench-wave 1.0)" in items["wave"]["source"]
    assert {"linear", "cosine"} <= set(items)  # built-ins are still there


def test_entry_point_schedule_trains(tmp_path, workdir, monkeypatch, restore_schedules):
    from rftbench.experiments.experiment import run_experiment

    root = install_dist(tmp_path / "site", "rftbench-wave-train", {"wave_train": "rft_ep_wave_train:Wave"},
                        {"rft_ep_wave_train": TRIANGLE.format(decorator="", cls="Wave")})
    monkeypatch.syspath_prepend(str(root))
    SCHEDULES.load_entry_points()  # the registry scanned entry points before this test's dist existed
    assert SCHEDULES.entry("wave_train").source.startswith("entry point wave_train = rft_ep_wave_train:Wave")

    params = {"peak": 0.3, "cycles": 2, "power": 1.0}
    cfg = tiny_plugin_config("wave_train", schedule={"name": "wave_train", "params": params})
    res = run_experiment(cfg)
    run = client_for().get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rftbench.schedule"] == "wave_train"
    assert res.record["train"]["schedule"] == "wave_train(peak=0.3,cycles=2,power=1)"
    # the trainer followed the plugin's eps, step by step
    n_train, bs = int(run.data.params["data.n_train"]), cfg.data.batch_size
    steps, mean_eps = expected_attack_stats(lambda s, t, e: triangle_eps(s, t, e, **params), n_train, bs, 0.2)
    assert run.data.metrics["train/attack_steps"] == steps
    assert run.data.metrics["train/total_steps"] == math.ceil(n_train / bs)
    assert run.data.metrics["train/eps"] == pytest.approx(mean_eps, rel=1e-6)
    assert 0 < steps < math.ceil(n_train / bs)  # some steps at eps = 0 skipped the attack


def test_entry_point_taking_a_builtin_name_names_both_sources(tmp_path, monkeypatch, restore_schedules):
    root = install_dist(tmp_path / "site", "rftbench-evil", {"cosine": "rft_ep_evil:Evil"},
                        {"rft_ep_evil": TRIANGLE.format(decorator="", cls="Evil")})
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(DuplicateNameError) as ei:
        SCHEDULES.load_entry_points()
    msg = str(ei.value)
    assert "schedule 'cosine' is registered twice" in msg
    assert str(REPO / "rftbench" / "schedules" / "cosine.py") in msg
    assert "entry point cosine = rft_ep_evil:Evil (distribution rftbench-evil 1.0)" in msg
    assert SCHEDULES.entry("cosine").source == str(REPO / "rftbench" / "schedules" / "cosine.py")


def test_entry_point_module_registering_a_taken_name_names_all_three(tmp_path, monkeypatch, restore_schedules):
    root = install_dist(tmp_path / "site", "rftbench-evil2", {"step": "rft_ep_evil2:Evil"},
                        {"rft_ep_evil2": TRIANGLE.format(decorator="@register_schedule('step')", cls="Evil")})
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(DuplicateNameError) as ei:
        SCHEDULES.load_entry_points()
    msg = str(ei.value)
    assert msg.startswith("entry point step = rft_ep_evil2:Evil (distribution rftbench-evil2 1.0)")
    assert str(REPO / "rftbench" / "schedules" / "step.py") in msg and str(root / "rft_ep_evil2.py") in msg


@pytest.mark.parametrize("target, source, message", [
    ("rft_ep_bad1:not_a_schedule", "def not_a_schedule(step):\n    return 0.0\n",
     "must be a subclass of rftbench.scheduling.Schedule"),
    ("rft_ep_bad2:Tri", TRIANGLE.format(decorator="@register_schedule('other_name')", cls="Tri"),
     "the class is registered as 'other_name'"),
    ("rft_ep_bad3:Missing", "x = 1\n", "failed to load: AttributeError"),
])
def test_broken_entry_points_fail_with_where_and_why(target, source, message, tmp_path, monkeypatch,
                                                       restore_schedules):
    mod = target.split(":")[0]
    root = install_dist(tmp_path / "site", f"rftbench-{mod}", {"brokenthing": target}, {mod: source})
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(RftbenchError) as ei:
        SCHEDULES.load_entry_points()
    assert f"entry point brokenthing = {target}" in str(ei.value)
    assert message in str(ei.value)
    assert "brokenthing" not in SCHEDULES


# ---- tuning searches exactly the declared space ----------------------------------------

def test_tune_searches_exactly_the_declared_space_of_a_file_plugin(tmp_path, workdir, restore_schedules):
    from rftbench.tuning import tune

    f = plugin_file(tmp_path / "tune_triangle.py", "tune_triangle")
    cfg = tiny_plugin_config("tune_triangle", plugins=[str(f)])
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    res = tune(cfg, n_trials=2, storage=storage, study_name="tri-study", sampler="random", pruner="none")
    declared = {p.name: p for p in SCHEDULES.get("tune_triangle").params}

    study = optuna.load_study(study_name="tri-study", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = client_for()
    parent_ids = set()
    for t in study.trials:
        assert set(t.params) == set(declared) == set(t.distributions)
        for name, value in t.params.items():
            p = declared[name]
            assert t.distributions[name] == p.distribution()
            assert p.low <= value <= p.high
        assert isinstance(t.params["cycles"], int)
        # each trial is a finished MLflow run that trained with exactly these parameters
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["rftbench.kind"] == "trial" and run.data.tags["optuna.trial"] == str(t.number)
        assert run.data.params["schedule.name"] == "tune_triangle"
        for name, value in t.params.items():
            assert float(run.data.params[f"schedule.params.{name}"]) == pytest.approx(value)
        assert run.data.metrics["val/expected_robustness"] == pytest.approx(t.value)
        n_train = int(run.data.params["data.n_train"])
        steps, _ = expected_attack_stats(lambda s, n, e: triangle_eps(s, n, e, **t.params), n_train,
                                         cfg.data.batch_size, 0.2)
        assert run.data.metrics["train/attack_steps"] == steps
        parent_ids.add(run.data.tags["mlflow.parentRunId"])
    (parent_id,) = parent_ids
    parent = client.get_run(parent_id)
    assert parent.data.tags["rftbench.kind"] == "study"
    assert json.loads(parent.data.params["search_space"]) == {
        n: {"low": p.low, "high": p.high, "kind": p.kind, "log": p.log} for n, p in declared.items()}
    assert res.n_trials == 2 and res.best_params in [t.params for t in study.trials]


def test_tune_refuses_a_schedule_without_parameters_or_with_fixed_ones(workdir):
    from rftbench.errors import ConfigError
    from rftbench.tuning import tune

    with pytest.raises(ConfigError, match="'constant' declares no parameters.*cosine"):
        tune(tiny_config(schedule={"name": "constant"}), n_trials=1)
    with pytest.raises(ConfigError, match="every parameter fixed"):
        tune(tiny_config(), n_trials=1)  # tiny_config fixes linear's only parameter, warmup
    assert not (workdir / "optuna.db").exists()

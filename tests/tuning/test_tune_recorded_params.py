"""What Optuna records for a trial is what the trial trains: for every schedule and many sampled
trials (seeded Random and TPE samplers on an SQLite storage, no training), the params read back
from the storage rebuild exactly the eps the trial's run gets at every step (and every epoch)."""
from pathlib import Path

import optuna
import pytest

from conftest import tiny_config
from rftbench.scheduling import SCHEDULES, RampSchedule, create_schedule
from rftbench.training.plan import EpsController
from rftbench.tuning import build_space
from rftbench.tuning.objectives import parse_objectives
from rftbench.tuning.study import Prepared
from rftbench.tuning.trial import trial_config

TESTS_DIR = Path(__file__).resolve().parents[1]
# the families rftbench ships: other tests register plugins (the failing `fault` schedule) in this process
SHIPPED = [e.name for e in SCHEDULES.entries() if TESTS_DIR not in Path(e.source).resolve().parents]
TUNABLE = [n for n in SHIPPED if SCHEDULES.get(n).params]
STEPS_PER_EPOCH, EPOCHS, TARGET = 7, 5, 0.2


def _eps(name, params, granularity):
    """Every eps the trainer asks the schedule for (its own controller), in order."""
    ctl = EpsController(create_schedule(name, params), TARGET, granularity, STEPS_PER_EPOCH, EPOCHS)
    return [ctl.eps(e, b) for e in range(EPOCHS) for b in range(STEPS_PER_EPOCH)]


def _sample(cfg, storage, sampler, n):
    """``n`` trials asked with ``sampler``: each trial's run config, and its params as stored."""
    space = build_space(cfg)
    prep = Prepared(cfg, space, parse_objectives(None), "s", storage, None, parent_run_id="")
    study = optuna.create_study(storage=storage, sampler=sampler, direction="maximize")
    runs = {}
    for i in range(n):
        trial = study.ask()
        runs[trial.number] = trial_config(prep, trial)
        study.tell(trial, float(i % 5))  # some spread for TPE's model
    stored = optuna.load_study(study_name=study.study_name, storage=storage).trials
    return runs, stored


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("name", TUNABLE)
def test_recorded_params_rebuild_the_trained_schedule(name, sampler, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = tiny_config(schedule={"name": name, "params": {}})
    make = {"random": lambda: optuna.samplers.RandomSampler(seed=7),
            "tpe": lambda: optuna.samplers.TPESampler(seed=7, n_startup_trials=5, multivariate=True)}[sampler]
    runs, stored = _sample(cfg, f"sqlite:///{tmp_path / 'o.db'}", make(), 40)
    rebuilt_space = build_space(tiny_config(schedule={"name": name, "params": {}}))  # built afresh, as a reader would
    declared = {p.name for p in SCHEDULES.get(name).params}
    for t in stored:
        run = runs[t.number].schedule
        fam, params = rebuilt_space.rebuild(t.params)
        assert fam == run.name == name
        for g in ("step", "epoch"):
            assert _eps(fam, params, g) == _eps(run.name, run.params, g), (t.number, t.params, run.params)
        for key in declared & set(t.params):  # a parameter searched as itself is recorded as trained
            assert t.params[key] == run.params[key]
        if issubclass(SCHEDULES.get(name), RampSchedule):
            start, length = t.params["start"], t.params["length"]
            assert run.params["start"] == start
            # the documented map over the full range, computed here on its own (rounding: a few ulps)
            assert run.params["end"] == pytest.approx(start + length * (1 - start), abs=4e-16)
            assert run.params["start"] <= run.params["end"] <= 1.0


def test_recorded_params_rebuild_the_trained_schedule_across_families(tmp_path):
    """One study over every schedule (those without parameters too): the family and its
    coordinates, as recorded, give the eps the trial's run trains with."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = tiny_config(schedule={"name": "epsilon_scheduling", "params": {}},
                      search={"schedules": SHIPPED,
                              "params": {"epsilon_scheduling.end": {"low": 0.5, "high": 0.9}}})
    runs, stored = _sample(cfg, f"sqlite:///{tmp_path / 'o.db'}", optuna.samplers.TPESampler(seed=3), 60)
    space = build_space(cfg)
    assert {t.params["schedule"] for t in stored} == set(SHIPPED)
    for t in stored:
        run = runs[t.number].schedule
        fam, params = space.rebuild(t.params)
        assert fam == run.name == t.user_attrs["schedule"]
        assert params == run.params == t.user_attrs["schedule_params"]
        assert _eps(fam, params, "step") == _eps(run.name, run.params, "step")
        if fam == "epsilon_scheduling":
            assert max(run.params["start"], 0.5) <= run.params["end"] <= 0.9  # the narrowed range, by construction

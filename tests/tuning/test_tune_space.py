"""The search space from a config's ``search:`` section, its validation, and per-worker seeds
(no training here: Optuna's own samplers ask the space directly)."""
import optuna
import pytest

from conftest import tiny_config
from rftbench.errors import ConfigError, TuneError
from rftbench.scheduling import SCHEDULES
from rftbench.tuning import TuneOptions, build_space, trial_seed
from rftbench.tuning.samplers import grid_values, make_sampler


def _ask(space, sampler, n=40):
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        suggested = space.suggest(trial)
        out.append((trial.params, *suggested))
        study.tell(trial, 0.0)
    return out


def test_default_space_is_the_declared_parameters_and_fixed_ones_are_held():
    space = build_space(tiny_config(schedule={"name": "linear", "params": {}}))
    declared = {p.name: p for p in SCHEDULES.get("linear").params}
    assert space.distributions() == {n: p.distribution() for n, p in declared.items()}
    step = build_space(tiny_config(schedule={"name": "step"}))  # a ramp: start and end as start and length
    assert step.distributions() == {"start": declared_dist("step", "start"), "levels": declared_dist("step", "levels"),
                                    "length": optuna.distributions.FloatDistribution(0.0, 1.0)}
    fixed = build_space(tiny_config(schedule={"name": "step", "params": {"levels": 3}}))
    assert set(fixed.distributions()) == {"start", "length"}
    for params, fam, values, knobs in _ask(fixed, optuna.samplers.RandomSampler(seed=1), 20):
        assert fam == "step" and values["levels"] == 3 and "levels" not in params
        assert values["start"] <= values["end"]  # the ramp's constraint, kept by its coordinates
        assert values["start"] == params["start"]  # recorded as trained, never reordered


def declared_dist(family, name):
    return next(p for p in SCHEDULES.get(family).params if p.name == name).distribution()


def test_one_fixed_ramp_boundary_searches_the_others_own_value_on_its_side():
    """With end fixed, start is searched as itself below it; with start fixed, end above it;
    ranges that leave no valid value are refused."""
    ends = build_space(tiny_config(schedule={"name": "cosine", "params": {"start": 0.3}}))
    assert ends.distributions() == {"end": optuna.distributions.FloatDistribution(0.3, 1.0)}
    starts = build_space(tiny_config(schedule={"name": "cosine", "params": {"end": 0.6}},
                                     search={"params": {"start": {"low": 0.1, "high": 0.9}}}))
    assert starts.distributions() == {"start": optuna.distributions.FloatDistribution(0.1, 0.6)}
    for params, fam, values, knobs in _ask(starts, optuna.samplers.RandomSampler(seed=3), 20):
        assert values == {"start": params["start"], "end": 0.6}
    with pytest.raises(ConfigError, match="start's range .* lies above the fixed end=0.2"):
        build_space(tiny_config(schedule={"name": "cosine", "params": {"end": 0.2}},
                                search={"params": {"start": {"low": 0.3, "high": 0.9}}}))
    with pytest.raises(ConfigError, match="start's range .* lies above end's highest value 0.4"):
        build_space(tiny_config(schedule={"name": "cosine", "params": {}},
                                search={"params": {"start": {"low": 0.5, "high": 0.9}, "end": {"low": 0.1, "high": 0.4}}}))


def test_conditional_space_never_suggests_another_familys_parameter():
    cfg = tiny_config(schedule={"name": "epsilon_scheduling", "params": {}},
                      search={"schedules": ["linear", "exponential", "constant"],
                              "train": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}})
    space = build_space(cfg)
    seen = set()
    for params, fam, values, knobs in _ask(space, optuna.samplers.TPESampler(seed=0, n_startup_trials=5), 40):
        seen.add(fam)
        assert params["schedule"] == fam
        own = {f"{fam}.{n}" for n in SCHEDULES.get(fam).search_space()}  # exponential: start, length, sharpness
        assert set(params) == {"schedule", "train.lr"} | own  # nothing of another family
        assert set(values) == {p.name for p in SCHEDULES.get(fam).params}
        assert 1e-3 <= knobs["lr"] <= 1e-1
    assert seen == {"linear", "exponential", "constant"}


def test_enqueued_defaults_are_the_papers_setting():
    space = build_space(tiny_config(schedule={"name": "epsilon_scheduling", "params": {}}))
    point = space.default_point()
    assert point["start"] == 0.24 and point["length"] == pytest.approx(0.5 / 0.76, abs=1e-15)
    assert space.rebuild(point) == ("epsilon_scheduling", {"start": 0.24, "end": 0.74})  # exactly the paper's


@pytest.mark.parametrize("search, match", [
    ({"schedules": ["linear"], "bogus": 1}, "unknown key"),
    ({"params": {"warmup": {"low": 0.5, "high": 0.5}}}, "empty"),
    ({"params": {"warmup": {"low": 0.1, "high": 0.2, "step": 3}}}, "unknown key"),
    ({"train": {"epochs": {"low": 1, "high": 5}}}, "cannot search epochs"),
    ({"train": {"lr": {"low": 0, "high": 1, "log": True}}}, "log-scale range needs low > 0"),
    ({"schedules": ["linear", "linear"]}, "twice"),
])
def test_search_section_is_validated(search, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(schedule={"name": "linear", "params": {}}, search=search)


def test_fixed_and_searched_unknown_and_out_of_bounds_parameters_are_refused():
    with pytest.raises(ConfigError, match="both fixed .* and searched"):
        build_space(tiny_config(search={"params": {"warmup": {"low": 0.1, "high": 0.4}}}))  # warmup fixed at 0.5
    with pytest.raises(ConfigError, match="no searched schedule declares it"):
        build_space(tiny_config(schedule={"name": "linear", "params": {}},
                                search={"params": {"sharpness": {"low": 1, "high": 2}}}))
    with pytest.raises(ConfigError, match="leaves the declared bounds"):
        build_space(tiny_config(schedule={"name": "linear", "params": {}},
                                search={"params": {"warmup": {"low": 0.1, "high": 2}}}))
    with pytest.raises(ConfigError, match="nothing to tune"):
        build_space(tiny_config())  # linear's only parameter is fixed
    with pytest.raises(ConfigError, match="'constant' declares no parameters"):
        build_space(tiny_config(schedule={"name": "constant"}))


def test_samplers_that_cannot_handle_the_space_say_so():
    space = build_space(tiny_config(schedule={"params": {}}, search={"schedules": ["linear", "cosine"]}))
    with pytest.raises(TuneError, match="cmaes sampler cannot search a categorical"):
        make_sampler("cmaes", 0, space, 3, 1)
    with pytest.raises(TuneError, match="grid sampler needs one schedule family"):
        make_sampler("grid", 0, space, 3, 1)
    with pytest.raises(TuneError, match="handles one objective only"):
        make_sampler("cmaes", 0, build_space(tiny_config(schedule={"params": {}})), 3, 2)
    with pytest.raises(TuneError, match="at least one trial"):
        TuneOptions(trials=0).check()


def test_grid_values_cover_the_range():
    d = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert grid_values(d, 3) == [0.0, 0.5, 1.0]
    assert grid_values(optuna.distributions.IntDistribution(1, 10), 4) == [1, 4, 7, 10]
    assert grid_values(optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True), 3) == pytest.approx([1e-3, 1e-2, 1e-1])


def test_every_trial_gets_its_own_sampler_stream_whichever_worker_runs_it():
    """Two workers with the same config (same seed) on one study: trial numbers come from the
    storage, the sampler is re-seeded per trial number, so their proposals differ."""
    seeds = {trial_seed(0, n) for n in range(100)}
    assert len(seeds) == 100 and trial_seed(0, 5) == trial_seed(0, 5) != trial_seed(1, 5)
    space = build_space(tiny_config(schedule={"name": "epsilon_scheduling", "params": {}}))
    study = optuna.create_study()
    workers = [make_sampler(s, 0, space, 3, 1) for s in ("random", "tpe", "random")]  # same config seed
    points = []
    for i in range(12):  # interleaved, as concurrent workers would
        w = workers[i % 3]
        study.sampler = w
        trial = study.ask()
        space.suggest(trial)
        points.append(tuple(trial.params.values()))
        study.tell(trial, 0.0)
    assert len(set(points)) == 12
    # the same trial number gets the same proposal again (reproducible), a fresh study replays it
    again = optuna.create_study(sampler=make_sampler("random", 0, space, 3, 1))
    t = again.ask()
    space.suggest(t)
    assert tuple(t.params.values()) == points[0]

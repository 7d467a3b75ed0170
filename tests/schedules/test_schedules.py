"""Built-in schedules at their key points, the plugin contract's checks, and the schedule CLI."""
import json
import math
import re

import numpy as np
import pytest

from rftbench.cli import main
from rftbench.errors import ConfigError, DuplicateNameError, UnknownNameError
from rftbench.scheduling import (SCHEDULES, Param, RampSchedule, Schedule, ScheduleDefinitionError,
                                 create_schedule, parse_schedule_spec, plot_schedule_specs, schedule_catalog,
                                 schedule_outline)

BUILTINS = ["none", "constant", "linear", "epsilon_scheduling", "cosine", "step", "exponential"]
T = 0.3  # target eps for the key-point checks


@pytest.fixture
def restore_schedules():
    """Unregister whatever a test registers."""
    before = set(SCHEDULES.names())
    yield
    for name in set(SCHEDULES.names()) - before:
        SCHEDULES.unregister(name)


def test_every_builtin_is_discovered_from_its_own_file_with_a_reference():
    cat = {it["name"]: it for it in schedule_catalog()}
    for name in BUILTINS:
        assert cat[name]["origin"] == "built-in"
        assert cat[name]["source"].endswith(f"schedules/{name}.py")
        assert cat[name]["reference"], f"{name} must cite where its shape comes from"


def test_cosine_key_points():
    s = create_schedule("cosine", {"start": 0.2, "end": 0.6})
    eps = s.eps_values(100, T)
    assert eps[:21] == [0.0] * 21  # zero phase, and the ramp starts at 0
    assert eps[40] == pytest.approx(T / 2)  # the ramp's midpoint
    assert eps[30] == pytest.approx(T * (1 - math.cos(math.pi / 4)) / 2)
    assert eps[60:] == [T] * 40
    for x in range(1, 20):  # symmetric about the midpoint
        assert eps[20 + x] + eps[60 - x] == pytest.approx(T)
    # smooth: the first and last ramp steps are far smaller than a linear ramp's (T / 40)
    assert eps[21] - eps[20] < 0.1 * T / 40 and T - eps[59] < 0.1 * T / 40


def test_step_key_points():
    s = create_schedule("step", {"start": 0.2, "end": 0.6, "levels": 4})
    eps = s.eps_values(100, T)
    expected = [0.0] * 30 + [T / 4] * 10 + [T / 2] * 10 + [3 * T / 4] * 10 + [T] * 40
    assert eps == pytest.approx(expected)
    one = create_schedule("step", {"start": 0.1, "end": 0.5, "levels": 1}).eps_values(10, T)
    assert one == pytest.approx([0.0] * 5 + [T] * 5)
    with pytest.raises(ConfigError, match="'levels' must be an integer"):
        create_schedule("step", {"levels": 2.5})
    with pytest.raises(ConfigError, match=r"'levels'=11 is out of bounds \[1, 10\]"):
        create_schedule("step", {"levels": 11})


def test_exponential_key_points_against_numpy():
    k = 3.0
    s = create_schedule("exponential", {"start": 0.0, "end": 1.0, "sharpness": k})
    steps = np.arange(100)
    expected = T * (np.exp(k * steps / 100) - 1) / (np.exp(k) - 1)
    assert s.eps_values(100, T) == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-15)
    # slow then fast: below the linear ramp everywhere inside, and its last step is the steepest
    lin = create_schedule("epsilon_scheduling", {"start": 0.0, "end": 1.0}).eps_values(100, T)
    eps = s.eps_values(100, T)
    assert all(e < l for e, l in zip(eps[1:], lin[1:]))
    diffs = np.diff(eps)
    assert diffs.argmax() == len(diffs) - 1
    # with its zero phase and hold
    s2 = create_schedule("exponential", {"start": 0.5, "end": 0.75, "sharpness": k})
    assert s2.eps_at(49, 100, T) == 0.0 and s2.eps_at(75, 100, T) == T
    assert s2.eps_at(60, 100, T) == pytest.approx(T * math.expm1(k * 0.4) / math.expm1(k))


def test_phase_boundaries_are_fractions_so_epochs_and_steps_agree():
    # the same schedule over 50 epochs or 50 x 20 steps gives the same eps at each epoch start
    for name in ("epsilon_scheduling", "cosine", "step", "exponential"):
        s = create_schedule(name)
        assert [s.eps_at(e, 50, T) for e in range(50)] == pytest.approx(
            [s.eps_at(e * 20, 1000, T) for e in range(50)], abs=1e-12)


def test_ramp_constraints_and_degenerate_phases():
    with pytest.raises(ConfigError, match="start=0.8 must not exceed end=0.2"):
        create_schedule("cosine", {"start": 0.8, "end": 0.2})
    # start = end = 0 is constant; start = end = x is a jump at x
    assert create_schedule("cosine", {"start": 0, "end": 0}).eps_values(5, T) == [T] * 5
    assert create_schedule("exponential", {"start": 0.4, "end": 0.4}).eps_values(5, T) == [0, 0, T, T, T]


def test_eps_at_rejects_bad_arguments_and_clips_progress():
    s = create_schedule("linear", {"warmup": 0.5})
    with pytest.raises(ValueError, match="total_steps"):
        s.eps_at(0, 0, T)
    with pytest.raises(ValueError, match="target_eps"):
        s.eps_at(0, 10, -0.1)
    assert s.eps_at(25, 10, T) == T  # past the end holds the last value


def test_parameter_errors_name_the_parameter_and_bounds():
    with pytest.raises(ConfigError, match=r"schedule 'exponential': parameter 'sharpness'=50.0 is out of bounds \[0.1, 20.0\]"):
        create_schedule("exponential", {"sharpness": 50})
    with pytest.raises(ConfigError, match="'warmup'=nan is out of bounds"):
        create_schedule("linear", {"warmup": float("nan")})
    with pytest.raises(ConfigError, match="'levels'=inf is out of bounds"):
        create_schedule("step", {"levels": float("inf")})
    with pytest.raises(ConfigError, match="must be a number"):
        create_schedule("linear", {"warmup": True})
    with pytest.raises(ConfigError, match="its parameters are: start, end, levels"):
        create_schedule("step", {"level": 3})


@pytest.mark.parametrize("body, message", [
    ("params = (Param('a', 2.0, 0.0, 1.0),)", "default 2.0 is outside its bounds"),
    ("params = (Param('a', 1.0, 0.0, 1.0, log=True),)", "log-scale parameter needs low > 0"),
    ("params = (Param('a', 1.5, 1, 3, kind='int'),)", "integer default and bounds"),
    ("params = (Param('a', 0.5, 0, 1), Param('a', 0.5, 0, 1))", "'a' is declared twice"),
    ("params = (Param('a-b', 0.5, 0, 1),)", "must be a Python identifier"),
    ("params = (Param('a', 0.5, 0, float('inf')),)", "must be finite numbers"),
])
def test_malformed_declarations_fail_at_registration(body, message, restore_schedules):
    ns = {"Param": Param, "Schedule": Schedule}
    exec(f"class Bad(Schedule):\n    {body}\n    def alpha(self, p):\n        return p\n", ns)
    with pytest.raises(ScheduleDefinitionError, match=message) as ei:
        SCHEDULES.add("bad", ns["Bad"])
    assert "schedule 'bad'" in str(ei.value)
    assert "bad" not in SCHEDULES


def test_registration_checks_the_class_itself(restore_schedules):
    with pytest.raises(ScheduleDefinitionError, match="must be a subclass of rftbench.scheduling.Schedule"):
        SCHEDULES.add("func", lambda step: 0.0)

    class NoAlpha(Schedule):
        pass

    with pytest.raises(ScheduleDefinitionError, match=r"must implement alpha\(self, progress\)"):
        SCHEDULES.add("noalpha", NoAlpha)

    class NoRamp(RampSchedule):
        pass

    with pytest.raises(ScheduleDefinitionError, match=r"must implement ramp\(self, u\)"):
        SCHEDULES.add("noramp", NoRamp)

    class Crashes(Schedule):
        def alpha(self, p):
            return 1 / 0

    with pytest.raises(ScheduleDefinitionError, match="fails with its default parameters: ZeroDivisionError"):
        SCHEDULES.add("crashes", Crashes)

    class BadDefaults(RampSchedule):
        params = (Param("start", 0.9, 0, 1), Param("end", 0.1, 0, 1))

        def ramp(self, u):
            return u

    with pytest.raises(ScheduleDefinitionError, match="its defaults are not valid.*must not exceed"):
        SCHEDULES.add("baddefaults", BadDefaults)
    with pytest.raises(ScheduleDefinitionError, match="without ':'"):
        SCHEDULES.add("a:b", create_schedule("linear").__class__)
    assert not {"func", "noalpha", "noramp", "crashes", "baddefaults"} & set(SCHEDULES.names())


def test_a_class_defined_and_registered_in_a_test_works_end_to_end(restore_schedules):
    class Quadratic(Schedule):
        reference = "test"
        params = (Param("power", 2.0, 1.0, 4.0),)

        def alpha(self, progress):
            return progress ** self.values["power"]

    SCHEDULES.add("quadratic", Quadratic)
    s = create_schedule("quadratic", {"power": 3})
    assert repr(s) == "quadratic(power=3)"
    assert s.eps_at(5, 10, T) == pytest.approx(T / 8)
    with pytest.raises(DuplicateNameError, match=r"'quadratic' is registered twice"):
        class Other(Quadratic):
            pass
        SCHEDULES.add("quadratic", Other)


def test_nan_from_a_plugin_is_an_error_not_a_silent_zero(restore_schedules):
    class Weird(Schedule):
        def alpha(self, progress):
            return float("nan") if progress > 0.5 else progress

    SCHEDULES.add("weird", Weird)
    with pytest.raises(ScheduleDefinitionError, match="NaN at progress 0.8"):
        create_schedule("weird").eps_at(8, 10, T)


def test_schedule_outline_is_the_per_step_value():
    s = create_schedule("step", {"start": 0.0, "end": 1.0, "levels": 2})
    progress, eps = schedule_outline(s, 4, T)
    assert progress == [0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]
    assert eps == [0, 0, 0, 0, T / 2, T / 2, T / 2, T / 2]


def test_cli_schedules_list_table_and_json(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps cells at the terminal's width
    assert main(["schedules", "list"]) == 0
    table = capsys.readouterr().out
    for name in BUILTINS:
        assert name in table
    assert "levels=4 [1, 10] int" in table and "sharpness=4 [0.1, 20] log" in table
    assert "rftbench/schedules/cosine.py" in table
    assert main(["schedules", "list", "--json"]) == 0
    items = {it["name"]: it for it in json.loads(capsys.readouterr().out)}
    assert [p["name"] for p in items["exponential"]["params"]] == ["start", "end", "sharpness"]
    assert items["step"]["params"][2] == {"name": "levels", "default": 4, "low": 1, "high": 10, "kind": "int",
                                          "log": False, "help": items["step"]["params"][2]["help"]}


def test_cli_schedules_plot_writes_a_figure(tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "figs" / "schedules.png"
    argv = ["schedules", "plot", "epsilon_scheduling", "cosine:start=0.1,end=0.9", "step:levels=3",
            "--out", str(out), "--target-eps", "8/255", "--total-steps", "40", "--json"]
    assert main(argv) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["figure"] == str(out) and rep["target_eps"] == pytest.approx(8 / 255)
    assert [s["name"] for s in rep["schedules"]] == ["epsilon_scheduling", "cosine", "step"]
    assert rep["schedules"][1]["params"] == {"start": 0.1, "end": 0.9}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 100
    # more than one colour was drawn (not a blank canvas)
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10


@pytest.mark.parametrize("argv, message", [
    (["cosine:start=2"], r"parameter 'start'=2.0 is out of bounds \[0.0, 1.0\]"),
    (["cosin"], "Did you mean 'cosine'"),
    (["linear:warmup"], "expected key=value"),
    ([":warmup=1"], "has no name"),
])
def test_cli_schedules_plot_bad_specs_exit_2(argv, message, tmp_path, capsys):
    assert main(["schedules", "plot", *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "x.png").exists()


def test_plot_rejects_bad_figure_arguments(tmp_path):
    with pytest.raises(ConfigError, match=".png, .pdf or .svg"):
        plot_schedule_specs(["linear"], tmp_path / "x.txt")
    with pytest.raises(ConfigError, match="target eps must be a positive number"):
        plot_schedule_specs(["linear"], tmp_path / "x.png", target_eps=0)
    with pytest.raises(ConfigError, match="at least one schedule"):
        plot_schedule_specs([], tmp_path / "x.png")


def test_unknown_schedule_lists_the_new_builtins():
    with pytest.raises(UnknownNameError) as ei:
        create_schedule("exponental")
    assert "Did you mean 'exponential'" in str(ei.value)
    assert "cosine, epsilon_scheduling, exponential" in str(ei.value)


def test_registry_keeps_a_failed_loader_and_does_not_recurse_while_loading():
    from rftbench.registry import Registry

    reg = Registry("widget")
    calls = []

    def loader():
        calls.append(reg.names())  # a look-up while loading sees what is there so far
        if len(calls) == 1:
            raise DuplicateNameError("widget 'a' is registered twice")
        reg.add("a", object(), source="a.py")

    reg.add_loader(loader)
    with pytest.raises(DuplicateNameError):
        reg.names()
    assert reg.names() == ["a"]  # the failed loader ran again instead of being forgotten
    assert calls == [[], []]
    assert reg.unregister("a").source == "a.py" and "a" not in reg
    with pytest.raises(UnknownNameError):
        reg.unregister("a")


def test_registry_check_hook_vets_before_registering():
    from rftbench.errors import RftbenchError
    from rftbench.registry import Registry

    def only_ints(name, obj, source):
        if not isinstance(obj, int):
            raise RftbenchError(f"{name} from {source} is not an int")

    reg = Registry("number", check=only_ints)
    reg.add("one", 1, source="here")
    with pytest.raises(RftbenchError, match="two from there is not an int"):
        reg.add("two", "2", source="there")
    assert reg.names() == ["one"]


def test_builtins_are_discovered():
    assert {"none", "constant", "linear", "epsilon_scheduling"} <= set(SCHEDULES.names())


def test_epsilon_scheduling_matches_paper_formula():
    # the paper: T = 50 epochs, T1 = 12, T2 = 37 -> eps(t) = max(0, min(1, (t - 12) / 25)) * target
    s = create_schedule("epsilon_scheduling", {"start": 12 / 50, "end": 37 / 50})
    for t in range(50):
        expected = min(max((t - 12) / 25, 0.0), 1.0) * (4 / 255)
        assert s.eps_at(t, 50, 4 / 255) == pytest.approx(expected, abs=1e-12)


def test_constant_none_linear():
    assert create_schedule("constant").eps_at(0, 10, 0.3) == 0.3
    assert create_schedule("none").eps_at(9, 10, 0.3) == 0.0
    lin = create_schedule("linear", {"warmup": 0.5})
    assert lin.eps_at(0, 100, 0.2) == 0.0
    assert lin.eps_at(25, 100, 0.2) == pytest.approx(0.1)
    assert lin.eps_at(60, 100, 0.2) == pytest.approx(0.2)


def test_out_of_range_and_unknown_parameters():
    with pytest.raises(ConfigError, match=r"'start'=1.5 is out of bounds \[0.0, 1.0\]"):
        create_schedule("epsilon_scheduling", {"start": 1.5})
    with pytest.raises(ConfigError, match="must not exceed"):
        create_schedule("epsilon_scheduling", {"start": 0.8, "end": 0.2})
    with pytest.raises(ConfigError, match="no parameter"):
        create_schedule("constant", {"warmup": 0.1})
    with pytest.raises(UnknownNameError, match="Did you mean 'linear'"):
        create_schedule("lineer")


def test_spec_parsing():
    assert parse_schedule_spec("linear:warmup=0.3") == ("linear", {"warmup": 0.3})
    with pytest.raises(ConfigError):
        parse_schedule_spec("linear:warmup")

"""Malformed configs: every input ends in a valid config or an RftbenchError with a message
(never another exception), for hand-picked cases, generated field cases and fuzzed input."""
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from rftbench.config import ExperimentConfig, load_config, parse_config
from rftbench.errors import ConfigError, RftbenchError

HAND_PICKED = [  # (file text or bytes, overrides, expected message)
    (b"\x00\x01\x02binary", [], "binary file"),
    ("name: caf\xe9\n".encode("latin-1"), [], "not UTF-8"),
    ("threat: {eps: 4/0}\n", [], "divides by zero"),
    ("threat: {eps: .inf}\n", [], "finite"),
    ("threat: {eps: .nan}\n", [], "finite"),
    ("threat: {eps: 1.5}\n", [], r"outside \[0, 1\]"),
    ("threat: {eps: 8}\n", [], "did you mean 8/255"),
    ("eval: {eps_grid: [0, 2]}\n", [], "eval.eps_grid"),
    ("eval: {eps_grid: [0, .nan]}\n", [], "eval.eps_grid"),
    ("experiment: ''\n", [], "experiment"),
    ("seed: 1180591620717411303424\n", [], "seed"),
    ("train: {epochs: 1000000000000}\n", [], "train.epochs"),
    ("", [], "is empty"),
    ("# only a comment\n", [], "is empty"),
    ("name: a\nname: b\n", [], r"'name' is written twice .*lines 1 and 2"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n", [], r"'lr' is written twice"),
    ("train: {progress: yes}\n", [], "train.progress"),
    ("train: {device: gpu}\n", [], "not a device"),
    ("train: {lr: .inf}\n", [], "train.lr"),
    ("name: x\n", ["train.epochs=[1,"], "not valid YAML"),
    ("name: x\n", ["train.epochs"], "section.key=value"),
    ("name: x\n", ["=3"], "section.key=value"),
    ("name: x\n", ["train..epochs=3"], "section.key=value"),
    ("name: x\n", ["name.sub=3"], "not a section"),
    ("[1, 2]\n", [], "top level must be a mapping"),
    ("just a string\n", [], "top level must be a mapping"),
    ("attack: {target_eps: 0.1}\n", [], "moved to threat.eps"),
    ("train: {trades_beta: 3}\n", [], "moved to train.objective.params.beta"),
    ("eval: {pgd_steps: 3}\n", [], "moved to eval.sweep_steps"),
    ("train: {epochz: 3}\n", [], "unknown key"),
    ("threat: [1, 2]\n", [], "threat"),
    ("model: {name: [1]}\n", [], "model.name"),
    ("when: 2026-13-45\n", [], "config file"),
    ("a: &x [*x]\n", [], "contain itself"),
    ("model: {kwargs: &x {a: *x}}\n", [], "contain itself"),
    ("a: !!python/object:os.system {}\n", [], "not valid YAML"),
    ("{unclosed: 1\n", [], "not valid YAML"),
]

# generated: every numeric field gets values it must refuse
NUMERIC_FIELDS = {
    "train.epochs": [0, -1, "many", [], 1e13], "train.lr": [0, -0.1, "fast", {}, float("nan")],
    "train.momentum": [1.0, -0.5, "x"], "train.weight_decay": [-1, "x"], "train.accum_steps": [0, 1e9],
    "train.val_samples": [0, "x"], "train.warmup_epochs": [-1, "x"], "train.grad_clip": [0, -1],
    "data.batch_size": [0, -3, 1e12, "big"], "data.eval_batch_size": [0, "x"], "data.val_fraction": [1.0, -0.1, 2],
    "data.num_workers": [-1, 10**6], "attack.steps": [0, 10**9, "x"], "attack.step_size_ratio": [0, -1, "x"],
    "eval.num_points": [1, 0, 10**9], "eval.sweep_steps": [0, "x"], "eval.restarts": [0, 10**9],
    "eval.n_samples": [0, 10**12], "eval.autoattack.n_samples": [0, "x"], "eval.checks.probe_samples": [-1],
    "threat.eps": [-0.1, 2, "x", [0.1]], "seed": [-1, 2**64, "x"], "model.head_lr_scale": [0, -1],
    "train.precision": ["fp8", 16], "threat.norm": ["L1", "linf"], "attack.name": ["fgsm"],
    "eval.split": ["train"], "train.optimizer": ["adam"], "schedule.granularity": ["batch"],
}
GENERATED = [(k, v) for k, values in NUMERIC_FIELDS.items() for v in values]


def _nested(key, value):
    out = node = {}
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def test_there_are_at_least_a_hundred_malformed_cases():
    assert len(HAND_PICKED) + len(GENERATED) >= 100


@pytest.mark.parametrize("text, overrides, message", HAND_PICKED)
def test_hand_picked_malformed_configs_get_a_clear_error(tmp_path, text, overrides, message):
    p = tmp_path / "c.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message):
        load_config(p, overrides)


@pytest.mark.parametrize("key, value", GENERATED)
def test_generated_bad_values_name_their_field(key, value):
    with pytest.raises(ConfigError) as err:
        parse_config(_nested(key, value), "gen")
    assert key.rsplit(".", 1)[-1] in str(err.value)


def test_yaml_booleans_in_enum_fields_mean_the_word(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {progress: off}\n")
    assert load_config(p).train.progress == "off"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


SECTIONS = sorted(ExperimentConfig.model_fields)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["4/255", "1/0", "off", "Linf", "pgd", "apgd-ce"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
fields = st.sampled_from(sorted({k.split(".")[-1] for k in NUMERIC_FIELDS} | {"name", "params", "eps", "norm"}))
sections = st.dictionaries(fields, values, max_size=4)
configs = st.dictionaries(st.sampled_from(SECTIONS), st.one_of(sections, values), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs)
def test_fuzzed_config_dicts_end_valid_or_in_a_clear_error(data):
    try:
        cfg = parse_config(data, "fuzz")
    except RftbenchError as exc:
        assert str(exc)
        return
    assert math.isfinite(cfg.threat.eps) and 0 <= cfg.threat.eps


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                 configs.map(lambda d: yaml.safe_dump(d).encode())))
def test_fuzzed_files_end_valid_or_in_a_clear_error(tmp_path, raw):
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(raw)
    try:
        load_config(p)
    except RftbenchError as exc:
        assert str(exc)


def test_billion_laughs_is_read_in_linear_time(tmp_path):
    """Nine levels of ten aliases each expand to 10^9 strings; nothing may expand them."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    p = tmp_path / "lol.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(p)
    p.write_text("\n".join(lines) + "\nmodel: {kwargs: *a8}\n")  # a huge value in a real field
    with pytest.raises(ConfigError, match="model.kwargs"):
        load_config(p)


def test_yaml_errors_point_into_the_file_not_a_string(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f'in "{p}", line 2' in str(err.value) and "<unicode string>" not in str(err.value)

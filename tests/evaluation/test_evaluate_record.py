"""The evaluation record: complete, self-consistent, AutoAttack identical to pyautoattack's, in MLflow."""
import json

import numpy as np
import pytest
import torch

from eval_helpers import source_setup
from rftbench.data import eval_subset_indices, indices_sha256
from rftbench.evaluation.evaluate import evaluate_model
from rftbench.evaluation.metrics import expected_robustness
from rftbench.models import weights_sha256
from rftbench.evaluation.records import EvaluationRecord, RecordError


@pytest.fixture(scope="module")
def standard_record(embedded_cache):
    """pyautoattack standard on the whole 16-sample subset at eps 0.07 (one sample survives
    APGD-CE, so every attack of the version runs)."""
    cfg, model, test = source_setup(eval__n_samples=16, threat__eps=0.07, eval__num_points=3, eval__subset_seed=2,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=16,
                                    eval__checks__probe_samples=8,
                                    # PGD-3's gap to AutoAttack on 16 samples (0.19-0.25) depends on the
                                    # embedded weights, pretrained on this CPU; the gap check has its own tests
                                    eval__checks__sweep_vs_autoattack_max_gap=1.0)
    rec = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    return cfg, model, test, rec


def test_record_holds_what_it_takes_to_reproduce_it(standard_record):
    cfg, model, test, rec = standard_record
    d = rec.data
    subset = eval_subset_indices(len(test), 16, cfg.eval.subset_seed, test.labels.numpy())
    assert d["model"]["weights_sha256"] == weights_sha256(model)
    assert d["dataset"] == "digits" and d["split"] == "test" and d["n_samples"] == 16
    assert d["subset"]["indices_sha256"] == indices_sha256(subset) and d["subset"]["size_of_split"] == len(test)
    assert {"torch", "torchattacks", "pyautoattack", "rftbench"} <= set(d["versions"])
    assert d["seeds"] == {"experiment": 0, "subset": 2, "sweep_starts": 0, "autoattack": 0}
    assert d["settings"]["sweep"]["steps"] == 3 and d["settings"]["autoattack"]["version"] == "standard"
    assert {"sweep_s", "autoattack_s", "sanity_probe_s", "total_s"} <= set(d["timings"])
    s = rec.samples()
    np.testing.assert_array_equal(s.indices, subset)
    np.testing.assert_array_equal(s.labels, test.labels[subset].numpy())
    assert s.sweep_flags.mean(0).tolist() == d["sweep"]["accuracy"]
    assert d["clean_accuracy"] == d["sweep"]["accuracy"][0]
    assert d["expected_robustness"]["value"] == pytest.approx(expected_robustness(d["sweep"]["eps_grid"],
                                                                                  d["sweep"]["accuracy"]))
    assert d["expected_robustness"]["name"] == "ER[uniform(0,17.9/255),3pts,PGD-3]"
    aa = d["autoattack"]
    assert aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and aa["n_target_classes"] == 4
    assert aa["accuracy"] == float(np.mean(s.aa_broken_by == 0))
    assert sum(aa["broken_by"].values()) + round(aa["accuracy"] * 16) + round((1 - aa["clean_accuracy"]) * 16) == 16
    assert all(c["passed"] for c in d["checks"].values()), d["warnings"]
    assert d["certified"] is True  # standard on the whole designated subset (16 samples here), no check failed
    # round trip through JSON, and the leaderboard's metric keys
    assert json.loads(rec.to_json()) == d
    m = rec.metrics()
    assert m["eval/acc_autoattack"] == aa["accuracy"] and m["eval/acc_sweep"] == d["sweep"]["accuracy"][-1]
    assert {"eval/acc_clean", "eval/expected_robustness"} <= set(m)


def test_autoattack_flags_are_pyautoattack_flags(standard_record):
    """Calling pyautoattack directly on the same samples gives the same per-sample results."""
    from pyautoattack import AutoAttack

    cfg, model, test, rec = standard_record
    s = rec.samples()
    x, y = test.images[s.indices], test.labels[s.indices]
    aa = AutoAttack(model, norm="Linf", eps=0.07, version="standard", device="cpu", seed=0)
    aa.apgd_targeted.n_target_classes = 4
    aa.fab.n_target_classes = 4
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=16)
    np.testing.assert_array_equal(s.aa_broken_by == 0, (y_adv == y).numpy())
    assert 0 < rec["autoattack"]["accuracy"] < rec["sweep"]["accuracy"][-1]


def test_certified_only_for_standard_on_the_full_subset(embedded_cache):
    common = dict(threat__eps=0.1, eval__num_points=2, eval__autoattack__enabled=True,
                  eval__checks__probe_samples=0)
    cfg, model, test = source_setup(eval__n_samples=32, eval__autoattack__n_samples=16, **common)
    part = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    assert part["autoattack"]["n_samples"] == 16 and part["certified"] is False
    cfg, model, test = source_setup(eval__n_samples=16, eval__autoattack__n_samples=16, **common,
                                    eval__autoattack__version="custom", eval__autoattack__attacks=["apgd-ce"])
    custom = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    assert custom["autoattack"]["attacks"] == ["apgd-ce"] and custom["certified"] is False
    val = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="val")  # not the test split
    assert val["certified"] is False


def test_torchattacks_second_opinion_is_recorded(embedded_cache):
    cfg, model, test = source_setup(eval__n_samples=16, threat__eps=0.1, eval__num_points=2,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=16,
                                    eval__autoattack__second_opinion=True, eval__checks__probe_samples=0)
    rec = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    ta = rec["autoattack"]["torchattacks"]
    s = rec.samples()
    assert ta["library"] == "torchattacks" and ta["accuracy"] == float(s.ta_flags.mean())
    assert ta["disagreements"] == int(np.sum(s.ta_flags != (s.aa_broken_by == 0)))
    assert rec.metrics()["eval/acc_autoattack_torchattacks"] == ta["accuracy"]
    assert "autoattack_torchattacks_s" in rec["timings"]


def test_evaluate_config_logs_record_and_metrics_to_mlflow(workdir):
    from rftbench.experiments.experiment import evaluate_config
    from rftbench.tracking.store import client_for

    cfg, _, _ = source_setup(eval__n_samples=16, eval__num_points=2, eval__checks__probe_samples=4)
    rec, run_id = evaluate_config(cfg, out=workdir / "rec.json")
    client = client_for()
    run = client.get_run(run_id)
    assert run.data.tags["rftbench.kind"] == "evaluation"
    assert run.data.tags["rftbench.weights_sha256"] == rec["model"]["weights_sha256"]
    assert run.data.metrics["eval/expected_robustness"] == pytest.approx(rec["expected_robustness"]["value"])
    local = client.download_artifacts(run_id, "evaluation/evaluation.json", str(workdir / "dl"))
    stored = json.load(open(local))
    assert stored["per_sample"] == rec["per_sample"] and stored["sweep"]["accuracy"] == rec["sweep"]["accuracy"]
    assert EvaluationRecord.load(workdir / "rec.json").data == rec.data


def test_loading_something_that_is_not_a_record(tmp_path):
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(RecordError, match="not an rftbench evaluation record"):
        EvaluationRecord.load(tmp_path / "x.json")
    with pytest.raises(RecordError, match="does not exist"):
        EvaluationRecord.load(tmp_path / "missing.json")


def test_apgd_ce_sweep_record(embedded_cache):
    """eval.sweep_attack: apgd-ce (the paper's metric): the record, the ER name and the MLflow
    metric names say which attack ran, and the flags are those of the pruned APGD-CE sweep."""
    from rftbench.attacks import SweepSettings
    from rftbench.attacks.pruned import pruned_sweep

    cfg, model, test = source_setup(eval__n_samples=16, threat__eps=0.07, eval__num_points=3,
                                    eval__sweep_attack="apgd-ce", eval__sweep_steps=10, eval__restarts=2,
                                    eval__checks__probe_samples=8,
                                    # PGD-3's gap to AutoAttack on 16 samples (0.19-0.25) depends on the
                                    # embedded weights, pretrained on this CPU; the gap check has its own tests
                                    eval__checks__sweep_vs_autoattack_max_gap=1.0)
    rec = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    d = rec.data
    assert d["sweep"]["attack"] == "apgd-ce" and d["sweep"]["class"] == "APGD" and d["sweep"]["restarts"] == 2
    assert d["settings"]["sweep"]["steps"] == 10 and d["settings"]["checks"]["large_eps_attack"]["steps"] == 20
    assert d["expected_robustness"]["name"] == "ER[uniform(0,17.9/255),3pts,APGD-CE-10x2]"
    assert d["expected_robustness"]["attack"] == "APGD-CE-10x2"
    s = rec.samples()
    x, y = test.images[s.indices], test.labels[s.indices]
    settings = SweepSettings("apgd-ce", "Linf", steps=10, restarts=2, seed=cfg.seed)
    np.testing.assert_array_equal(s.sweep_flags, pruned_sweep(model, [(x, y, s.indices)], cfg.eps_grid(), settings))
    assert 0 < d["sweep"]["accuracy"][-1] < d["clean_accuracy"]
    assert d["checks"]["monotone"]["passed"] is True and d["checks"]["large_eps"]["passed"] is True
    m = rec.metrics()
    assert m["eval/acc_sweep"] == d["sweep"]["accuracy"][-1]
    assert [k for k in m if k.startswith("eval/acc_sweep_eps_")] == [
        "eval/acc_sweep_eps_0.00_255", "eval/acc_sweep_eps_8.93_255", "eval/acc_sweep_eps_17.85_255"]
    assert not any("pgd" in k for k in m)


def test_apgd_ce_with_a_pgd_step_size_fails_before_any_work(embedded_cache):
    from rftbench.errors import ConfigError

    cfg, model, test = source_setup(eval__sweep_attack="apgd-ce", eval__step_size_ratio=0.25)
    with pytest.raises(ConfigError, match="APGD-CE adapts its own"):
        evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")


def test_records_of_the_old_format_are_refused_with_a_reason(tmp_path, standard_record):
    old = json.loads(standard_record[3].to_json())
    old["rftbench_record"] = 2
    old["pgd"] = old.pop("sweep")
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(RecordError, match="format 2 .*key 'pgd'.*Re-evaluate"):
        EvaluationRecord.load(tmp_path / "old.json")


def _gz64(raw: bytes) -> str:
    import base64
    import gzip

    return base64.b64encode(gzip.compress(raw)).decode()


def _labels_as(labels: dict, **change) -> dict:
    return {**labels, **change}


# (field, how to break it, what the message must say)
MALFORMED = [
    ("labels", lambda a: _labels_as(a, dtype="object"), r"dtype 'object', which is not a numeric one"),
    ("labels", lambda a: _labels_as(a, dtype="|O"), r"dtype '\|O', which is not a numeric one"),
    ("labels", lambda a: _labels_as(a, dtype="<U5"), r"dtype '<U5', which is not a numeric one"),
    ("labels", lambda a: _labels_as(a, dtype="i8,f8"), r"dtype 'i8,f8', which is not a numeric one"),
    ("labels", lambda a: _labels_as(a, dtype="no-such-type"), r"dtype 'no-such-type'"),
    ("labels", lambda a: _labels_as(a, dtype=8), r"dtype 8, which is not a numeric one"),
    ("labels", lambda a: _labels_as(a, data="@@not base64@@"), r"data that is not base64 of gzip \(Error"),
    ("labels", lambda a: _labels_as(a, data=_gz64(b"x")[:-8]), r"data that is not base64 of gzip"),
    ("labels", lambda a: _labels_as(a, data="aGVsbG8="), r"data that is not base64 of gzip \(BadGzipFile"),
    ("labels", lambda a: _labels_as(a, data=12), r"data is a int, not a string"),
    ("labels", lambda a: _labels_as(a, data=_gz64(b"\0" * 5)), r"holds 5 bytes of data where its dtype '<i8' "
                                                               r"and shape \[16\] need 128"),
    ("sweep_flags", lambda a: _labels_as(a, data=_gz64(b"\0")), r"holds 1 bytes .* need 6"),
    ("labels", lambda a: _labels_as(a, shape="16"), r"shape '16', which is not a list of non-negative"),
    ("labels", lambda a: _labels_as(a, shape=[-16]), r"shape \[-16\]"),
    ("labels", lambda a: {k: v for k, v in a.items() if k != "data"}, r"is not a packed array"),
    ("labels", lambda a: [1, 2, 3], r"is not a packed array"),
    ("labels", lambda a: _labels_as(a, dtype="<f8"), r"1-d float64 array; it should be 1-d of kind 'iu'"),
    ("labels", lambda a: _labels_as(a, shape=[4, 4]), r"2-d int64 array; it should be 1-d"),
    ("labels", lambda a: _labels_as(a, shape=[8], data=_gz64(b"\0" * 64)), r"'labels' has 8 rows where 'indices' "
                                                                          r"has 16"),
    ("sweep_flags", lambda a: None, r"'sweep_flags' is missing"),
    ("start", lambda a: "x", r"per_sample field 'start' is malformed \(ValueError"),
    ("aa_attacks", lambda a: 3, r"per_sample field 'aa_attacks' is malformed \(TypeError"),
    (None, lambda a: [1], r"per_sample is a list, not a JSON object"),
]


@pytest.mark.parametrize("field,change,expected", MALFORMED, ids=[f"{i}-{c[0]}" for i, c in enumerate(MALFORMED)])
def test_a_record_with_a_malformed_per_sample_field_is_one_clear_error(tmp_path, standard_record, field, change,
                                                                      expected):
    data = json.loads(standard_record[3].to_json())
    if field is None:
        data["per_sample"] = change(data["per_sample"])
    else:
        data["per_sample"][field] = change(data["per_sample"][field])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=expected) as info:
        EvaluationRecord.load(path)
    msg = str(info.value)
    assert msg.startswith(f"evaluation record {path} is malformed: ") and "\n" not in msg
    assert field is None or f"'{field}'" in msg
    assert msg.endswith("write it again with `rftbench evaluate CONFIG --out FILE`.")
    with pytest.raises(RecordError, match=expected):  # a record built in memory says the same, without a path
        EvaluationRecord(data).samples()


def test_a_malformed_reference_record_exits_2_through_the_cli(workdir, capsys, standard_record):
    import yaml

    from rftbench.cli import main

    data = json.loads(standard_record[3].to_json())
    data["per_sample"]["sweep_flags"]["dtype"] = "object"
    (workdir / "ref.json").write_text(json.dumps(data))
    (workdir / "c.yaml").write_text(yaml.safe_dump(standard_record[0].model_dump()))
    assert main(["evaluate", "c.yaml", "--reference", "ref.json", "--no-log"]) == 2
    err = capsys.readouterr().err
    assert "ref.json is malformed: per_sample field 'sweep_flags' has dtype 'object'" in err
    assert "Traceback" not in err and "OBJECT array" not in err

"""Sharded evaluation: merged shard records hold exactly the numbers of an unsharded evaluation."""
import json

import numpy as np
import pytest
import yaml

from eval_helpers import source_setup
from rftbench.cli import main
from rftbench.config import parse_shard
from rftbench.errors import ConfigError
from rftbench.evaluation.evaluate import evaluate_model, merge_records, shard_range
from rftbench.evaluation.records import RecordError


def _numbers(rec):
    """Everything but what legitimately differs (wall times, shard bookkeeping)."""
    d = {k: v for k, v in rec.data.items() if k not in ("timings", "merged_from")}
    return json.loads(json.dumps(d))


@pytest.fixture(scope="module")
def sharded(embedded_cache):
    # 24 samples in blocks of 8; AutoAttack on the first 16 and the probe on the first 12 cross
    # shard boundaries; random starts with 2 restarts are seeded per sample
    cfg, model, test = source_setup(eval__n_samples=24, threat__eps=0.07, eval__num_points=3,
                                    eval__restarts=2, eval__random_start=True, eval__checks__probe_samples=12,
                                    data__eval_batch_size=8, eval__autoattack__batch_size=8,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=16,
                                    eval__autoattack__version="custom",
                                    eval__autoattack__attacks=["apgd-ce", "apgd-t"])
    kw = dict(device="cpu", dataset_name="digits", split="test")
    reference = evaluate_model(model, test, cfg, with_autoattack=False, **kw)
    whole = evaluate_model(model, test, cfg, reference=reference, **kw)
    shards = [evaluate_model(model, test, cfg, shard=(i, 3), reference=reference, **kw) for i in range(3)]
    return whole, shards


def test_merge_of_shards_equals_unsharded(sharded):
    whole, shards = sharded
    assert [s["shard"]["positions"] for s in shards] == [[0, 8], [8, 16], [16, 24]]
    assert [s["autoattack"] and s["autoattack"]["n_samples"] for s in shards] == [8, 8, None]
    merged = merge_records(list(reversed(shards)))  # order of the files does not matter
    assert merged["shard"] is None and merged["merged_from"]["count"] == 3
    assert _numbers(merged) == _numbers(whole)
    # per-sample results in detail, not only their summary
    a, b = merged.samples(), whole.samples()
    np.testing.assert_array_equal(a.sweep_flags, b.sweep_flags)
    np.testing.assert_array_equal(a.aa_broken_by, b.aa_broken_by)
    np.testing.assert_array_equal(a.probe_raw, b.probe_raw)
    assert merged["autoattack"]["accuracy"] == whole["autoattack"]["accuracy"]
    assert 0 < whole["sweep"]["accuracy"][-1] < whole["clean_accuracy"]  # a non-trivial curve
    assert whole["checks"]["clean_reproduces_reference"]["passed"] is True
    assert merged["timings"]["total_s"] == pytest.approx(sum(s["timings"]["total_s"] for s in shards))


def test_merge_rejects_incomplete_or_mixed_shards(sharded):
    whole, shards = sharded
    with pytest.raises(RecordError, match=r"shards \[1\] of 3 are missing"):
        merge_records([shards[0], shards[2]])
    with pytest.raises(RecordError, match="given twice"):
        merge_records([shards[0], shards[0], shards[1], shards[2]])
    with pytest.raises(RecordError, match="not a shard"):
        merge_records([whole])
    other = type(shards[1])(json.loads(json.dumps(shards[1].data)))
    other.data["settings"]["sweep"]["steps"] = 7
    with pytest.raises(RecordError, match="differ in 'settings'"):
        merge_records([shards[0], other, shards[2]])


def test_shard_spec_and_ranges():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "a/b", "1-2", "0/0"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    assert [shard_range(1000, (i, 4), 256) for i in range(4)] == [(0, 256), (256, 512), (512, 768), (768, 1000)]
    assert [shard_range(100, (i, 2), 16) for i in range(2)] == [(0, 48), (48, 100)]
    with pytest.raises(ConfigError, match="at most 4 shard"):
        shard_range(1000, (0, 5), 256)


def test_cli_shards_then_merge_equal_cli_unsharded(workdir, capsys):
    from rftbench.tracking.store import client_for

    cfg, _, _ = source_setup(eval__n_samples=32, threat__eps=0.1, eval__num_points=2,
                             eval__checks__probe_samples=8, eval__autoattack__enabled=True,
                             eval__autoattack__n_samples=32)
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    for i in range(2):
        assert main(["evaluate", str(path), "--shard", f"{i}/2", "--out", f"s{i}.json"]) == 0
    assert main(["evaluate", str(path), "--out", "whole.json", "--no-log"]) == 0
    assert main(["evaluate", str(path), "--reference", "whole.json", "--out", "again.json", "--no-log"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "merge", "s1.json", "s0.json", "--out", "merged.json", "--experiment", "merged",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    from rftbench.evaluation.records import EvaluationRecord

    merged, whole = EvaluationRecord.load("merged.json"), EvaluationRecord.load("whole.json")
    assert _numbers(merged) == _numbers(whole)
    assert merged["certified"] is True and out["certified"] is True  # standard, on all 32 samples
    assert EvaluationRecord.load("s0.json")["certified"] is False
    assert EvaluationRecord.load("again.json")["checks"]["clean_reproduces_reference"]["passed"] is True
    # shard runs carry no eval/* metrics (the leaderboard sees only the merged one)
    client = client_for()
    runs = client.search_runs([client.get_experiment_by_name("merged").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == out["mlflow_run_id"]
    assert runs[0].data.metrics["eval/acc_autoattack"] == whole["autoattack"]["accuracy"]
    rb = client.get_experiment_by_name(cfg.experiment)
    shard_runs = client.search_runs([rb.experiment_id])
    assert sorted(r.data.tags["rftbench.shard"] for r in shard_runs) == ["0/2", "1/2"]
    assert all(set(r.data.metrics) == {"eval/time_s"} for r in shard_runs)  # timed, but never a leaderboard row


def test_cli_errors_exit_2(workdir, capsys):
    cfg, _, _ = source_setup(eval__n_samples=32)
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["evaluate", str(path), "--shard", "2/2", "--no-log"]) == 2
    assert "index must lie in 0..1" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--shard", "0/3", "--no-log"]) == 2
    assert "at most 2 shard(s)" in capsys.readouterr().err
    (workdir / "a.json").write_text("{}")
    assert main(["evaluate", "merge", "a.json"]) == 2
    err = capsys.readouterr().err
    assert "not an rftbench evaluation record" in err and "Traceback" not in err
    assert main(["evaluate", "merge"]) == 2
    assert "needs the shard records" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--no-log", "--set", "eval.autoattack.version=custom",
                 "--set", "eval.autoattack.attacks=[apgd-ce, pgd]"]) == 2
    assert "unknown attack(s) ['pgd']" in capsys.readouterr().err
    assert main(["evaluate", str(path), "--no-log", "--set", "eval.distribution=betta(2,5)"]) == 2
    assert "unknown eps distribution 'betta'" in capsys.readouterr().err


def test_apgd_ce_shards_merge_to_the_unsharded_record(embedded_cache):
    """APGD-CE's random starts are seeded per sample: shards see the same starts as the whole."""
    cfg, model, test = source_setup(eval__n_samples=24, threat__eps=0.07, eval__num_points=3,
                                    eval__sweep_attack="apgd-ce", eval__sweep_steps=5, eval__restarts=2,
                                    eval__checks__probe_samples=12, data__eval_batch_size=8)
    kw = dict(device="cpu", dataset_name="digits", split="test")
    whole = evaluate_model(model, test, cfg, **kw)
    shards = [evaluate_model(model, test, cfg, shard=(i, 3), **kw) for i in range(3)]
    merged = merge_records(shards)
    assert _numbers(merged) == _numbers(whole)
    assert 0 < whole["sweep"]["accuracy"][-1] < whole["clean_accuracy"]

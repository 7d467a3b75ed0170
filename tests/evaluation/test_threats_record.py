"""Records with eval.threats: per threat its own curve, ER, AutoAttack and checks, the union worst
case, the corruptions; without eval.threats, the record of main's code, byte for byte."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval_helpers import source_setup
from rftbench.evaluation.corruptions import corrupt_batch
from rftbench.evaluation.evaluate import evaluate_model, merge_records

GOLDEN = Path(__file__).parent / "golden" / "single_threat_record.json"
CUSTOM = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "n_samples": 16, "batch_size": 16}


# the parts of a record that come from the config and the data alone (no weights, no attack results)
CONFIG_DERIVED = ("rftbench_record", "dataset", "split", "subset", "shard", "threat_model", "n_samples", "seeds",
                  "settings")


def _skeleton(value):
    """The record's form: keys in order and leaf types, without the numbers (nor list lengths:
    how many warnings a record holds depends on its numbers)."""
    if isinstance(value, dict):
        return {k: _skeleton(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def test_a_single_threat_record_has_main_s_form_and_settings(embedded_cache):
    """The golden was written by main's code (commit 631d428, this config, timings dropped). Its
    numbers rest on the embedded weights, which each CPU pretrains itself, so what must stay is
    the record's form (keys, order, types) and every part the config alone decides."""
    cfg, model, test = source_setup(eval__n_samples=24, threat__eps=0.07, eval__num_points=3, eval__subset_seed=2,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=16,
                                    eval__autoattack__version="custom",
                                    eval__autoattack__attacks=["apgd-ce", "apgd-t"], eval__checks__probe_samples=8)
    d = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test").data
    d.pop("timings")
    golden = json.loads(GOLDEN.read_text())
    assert json.dumps(_skeleton(d)) == json.dumps(_skeleton(golden))
    assert {k: d[k] for k in CONFIG_DERIVED} == {k: golden[k] for k in CONFIG_DERIVED}
    assert "threats" not in d and "threats" not in d["settings"]


@pytest.fixture(scope="module")
def threats_record(embedded_cache):
    threats = [{"norm": "Linf", "eps": 0.07}, {"norm": "L2", "eps": 1.0, "autoattack": CUSTOM},
               {"norm": "L1", "eps": 3.0, "sweep_steps": 5, "autoattack": CUSTOM},
               {"corruptions": ["fog", "impulse_noise"], "severities": [1, 3]}]
    cfg, model, test = source_setup(eval__n_samples=16, threat__eps=0.07, eval__num_points=3, eval__subset_seed=2,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=16,
                                    eval__autoattack__version="custom", eval__autoattack__attacks=["apgd-ce"],
                                    eval__checks__probe_samples=8, eval__threats=threats)
    return cfg, model, test, evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")


def _at_target(flags, grid, eps):
    return flags[:, max(i for i, e in enumerate(grid) if e <= eps + 1e-12)]


def test_union_is_the_and_of_the_per_threat_flags(threats_record):
    _, _, _, rec = threats_record
    th, s = rec["threats"], rec.samples()
    assert list(th["norms"]) == ["Linf:0.07", "L2:1", "L1:3"] and th["norms"]["Linf:0.07"]["primary"]
    sweep = [_at_target(s.sweep_flags, rec["sweep"]["eps_grid"], 0.07)]
    aa = [s.aa_broken_by == 0]
    for key in ("L2:1", "L1:3"):
        part = s.threats[key]
        sweep.append(_at_target(part["sweep_flags"], th["norms"][key]["sweep"]["eps_grid"], th["norms"][key]["eps"]))
        aa.append(part["aa_broken_by"] == 0)
        assert th["norms"][key]["sweep"]["accuracy"] == part["sweep_flags"].mean(0).tolist()
        assert th["norms"][key]["autoattack"]["accuracy"] == float(np.mean(part["aa_broken_by"] == 0))
    assert th["union"]["sweep"]["accuracy"] == float(np.mean(sweep[0] & sweep[1] & sweep[2]))
    assert th["union"]["autoattack"]["accuracy"] == float(np.mean(aa[0] & aa[1] & aa[2]))
    # a non-trivial union: it is below every single threat's sweep accuracy at the target for some threat
    assert th["union"]["sweep"]["accuracy"] < max(float(f.mean()) for f in sweep)
    assert th["norms"]["L1:3"]["expected_robustness"]["attack"] == "L1-APGD-CE-5"
    assert set(th["norms"]["L2:1"]["checks"]) == {"monotone", "large_eps", "autoattack_vs_pgd",
                                                  "sweep_vs_autoattack", "square_vs_whitebox"}


def test_l1_autoattack_flags_are_pyautoattack_flags(threats_record):
    """A direct pyautoattack call in L1 on the same samples gives the record's per-sample flags."""
    from pyautoattack import AutoAttack

    _, model, test, rec = threats_record
    s = rec.samples()
    x, y = test.images[s.indices[:16]], test.labels[s.indices[:16]]
    aa = AutoAttack(model, norm="L1", eps=3.0, version="custom", attacks=["apgd-ce", "apgd-t"],
                    device="cpu", seed=0)
    aa.apgd_targeted.n_target_classes = 4
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=16)
    flags = s.threats["L1:3"]["aa_broken_by"] == 0
    np.testing.assert_array_equal(flags, (y_adv == y).numpy())
    assert rec["threats"]["norms"]["L1:3"]["autoattack"]["norm"] == "L1" and 0 < flags.mean() < 1


def test_corruption_accuracy_is_the_model_on_the_library_s_images(threats_record):
    """Recomputed independently: corrupt the subset again, predict, compare per corruption and severity."""
    cfg, model, test, rec = threats_record
    s, corr = rec.samples(), rec["threats"]["corruptions"]
    x, y = test.images[s.indices], test.labels[s.indices]
    for name in ("fog", "impulse_noise"):
        for sev in (1, 3):
            with torch.no_grad():
                ok = model(corrupt_batch(x, s.indices, name, sev, cfg.seed)).argmax(1) == y
            assert corr["accuracy"][name][str(sev)] == float(ok.double().mean())
    accs = [v for row in corr["accuracy"].values() for v in row.values()]
    assert corr["mean_accuracy"] == pytest.approx(np.mean(accs), abs=1e-12)  # float64 mean of the same values
    assert corr["relative_to_clean"] == pytest.approx(corr["mean_accuracy"] / rec["clean_accuracy"], abs=1e-12)
    assert len(corr["content_sha256"]) == 64 and corr["library"].startswith("imagecorruptions-imaug")
    assert min(accs) < rec["clean_accuracy"]  # fog at 3 hurts this model


def test_threat_shards_merge_into_the_unsharded_record(embedded_cache):
    threats = [{"norm": "L2", "eps": 1.0}, {"corruptions": ["contrast"], "severities": [2]}]
    cfg, model, test = source_setup(eval__n_samples=16, eval__num_points=3, data__eval_batch_size=8,
                                    eval__checks__probe_samples=4, eval__threats=threats)
    whole = evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")
    shards = [evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test", shard=(i, 2))
              for i in range(2)]
    merged = merge_records(shards)
    assert merged["threats"] == whole["threats"]
    assert whole["threats"]["norms"]["L2:1"]["autoattack"] is None and whole["threats"]["union"]["autoattack"] is None

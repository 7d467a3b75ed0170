"""Masking costs the certificate: models built to fool the evaluator (logit scaling, zero-gradient
input quantisation, random noise) are flagged and not certified, with the sanity probe on and
off; an honest model stays certified."""
import numpy as np
import pytest

from eval_helpers import LogitScaledModel, masked_models, source_setup
from rftbench.evaluation.checks import check_sweep_vs_autoattack
from rftbench.evaluation.evaluate import evaluate_model
from rftbench.experiments.experiment import _record_tags


@pytest.fixture(scope="module")
def setup(embedded_cache):
    # AutoAttack standard on the whole evaluation subset of the test split: certifiable
    return source_setup(eval__n_samples=10, threat__eps=0.2, eval__num_points=3, eval__sweep_steps=10,
                        eval__autoattack__enabled=True, eval__autoattack__n_samples=10,
                        eval__autoattack__batch_size=16, data__eval_batch_size=16)


def evaluate(model, test, cfg):
    return evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test")


@pytest.mark.parametrize("probe", [8, 0])
def test_masked_models_are_flagged_and_not_certified(setup, probe):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.checks.probe_samples = probe
    honest = evaluate(model, test, cfg)
    assert honest["certified"] is True and honest["flagged"] is False and honest["warnings"] == []
    for name, masked in masked_models(model).items():
        rec = evaluate(masked, test, cfg)
        failed = {k for k, c in rec["checks"].items() if c["passed"] is False}
        assert rec["flagged"] is True and rec["certified"] is False, (name, rec["checks"])
        assert failed and all(any(w.startswith(f + ":") for w in rec["warnings"]) for f in failed)
        tags = _record_tags(rec)
        assert tags["rftbench.flagged"] is True and tags["rftbench.certified"] is False
        if name == "logit_scaling":
            # CE gradients vanish: PGD sees 'robust' what AutoAttack (DLR-based APGD-T) breaks
            c = rec["checks"]["sweep_vs_autoattack"]
            assert c["passed"] is False and c["values"]["gap"] > 0.5 and c["values"]["max_gap"] == 0.2
            assert rec["settings"]["checks"]["sweep_vs_autoattack_max_gap"] == 0.2
            assert rec["sweep"]["accuracy"][-1] == 1.0 and rec["autoattack"]["accuracy"] < 0.3
    if probe == 0:
        assert honest["checks"]["monotone"]["passed"] is None  # the new check needs no probe


def test_a_scale_invariant_worst_case_sweep_sees_through_logit_scaling(setup):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.checks.probe_samples = 0
    cfg.eval.sweep_attack = ["apgd-ce", "apgd-dlr"]
    cfg.eval.autoattack.enabled = False
    scaled = evaluate(LogitScaledModel(model).eval(), test, cfg)
    plain = evaluate(model, test, cfg)
    assert scaled["expected_robustness"]["name"].endswith(",worst(APGD-CE-10|APGD-DLR-10)]")
    assert scaled["sweep"]["attack"] == ["apgd-ce", "apgd-dlr"]
    assert scaled["sweep"]["accuracy"][-1] <= plain["sweep"]["accuracy"][-1] + 0.1
    assert scaled["sweep"]["accuracy"][-1] < 0.5  # APGD-CE alone says 1.0 here


def test_sweep_vs_autoattack_on_made_up_numbers():
    aa = np.array([1, 0, 0, 0, 0], bool)
    assert check_sweep_vs_autoattack(aa, np.array([1, 1, 1, 0, 0], bool), 0.1, 0.2).passed is False
    ok = check_sweep_vs_autoattack(aa, np.array([1, 1, 0, 0, 0], bool), 0.1, 0.2)
    assert ok.passed is True and ok.values["gap"] == pytest.approx(0.2)
    assert check_sweep_vs_autoattack(np.zeros(0, bool), np.zeros(0, bool), 0.1, 0.2).passed is None

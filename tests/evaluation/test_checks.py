"""Sanity checks against gradient masking: each one tripped by a model built to trip it, and a
sane model passes them all."""
import copy

import numpy as np
import pytest
import torch

from eval_helpers import GuardedModel, NoisyModel, QuantizedInputModel, source_setup
from rftbench.evaluation.checks import (check_autoattack_vs_pgd, check_clean_reproduces, check_large_eps,
                                        check_monotone, check_square)
from rftbench.evaluation.evaluate import evaluate_model

GRID = [0.05, 0.1, 0.2]  # with 0 added: the sane model goes 1.0 -> ~0.6 -> 0 -> 0


def evaluate(model, test, cfg, **kw):
    return evaluate_model(model, test, cfg, device="cpu", dataset_name="digits", split="test", **kw)


@pytest.fixture(scope="module")
def setup(embedded_cache):
    return source_setup(eval__n_samples=32, eval__eps_grid=GRID, eval__sweep_steps=10, eval__checks__probe_samples=32)


def failed(rec):
    return {name for name, c in rec["checks"].items() if c["passed"] is False}


def test_pure_checks_on_made_up_numbers():
    raw = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 1], [1, 0, 1]], bool)
    bad = check_monotone([0, 0.1, 0.2], raw)
    assert bad.passed is False and bad.values["samples_robust_again"] == 2 and bad.values["max_rise"] == 0.5
    assert check_monotone([0, 0.1, 0.2], np.array([[1, 1, 0], [1, 0, 0]], bool)).passed is True
    assert check_monotone([0, 0.1], np.zeros((0, 2), bool)).passed is None
    assert check_large_eps(np.array([0, 0, 0, 1] * 5, bool), 1.0, 0.05).passed is False
    assert check_large_eps(np.zeros(20, bool), 1.0, 0.05).passed is True
    aa, pgd = np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)
    r = check_autoattack_vs_pgd(aa, pgd, 0.1, 0.1)
    assert r.passed is False and r.values["samples_pgd_broke_autoattack_missed"] == 1
    assert check_autoattack_vs_pgd(pgd, aa, 0.1, 0.1).passed is True
    assert check_square(1, 100, 0.002).passed is False and check_square(0, 100).passed is True
    assert check_clean_reproduces(3, 10, "x").passed is False and "3 of 10" in check_clean_reproduces(3, 10, "x").message


def test_a_sane_model_passes_every_check(setup):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.autoattack.enabled = True
    cfg.eval.autoattack.n_samples = 16
    rec = evaluate(model, test, cfg)
    assert rec["warnings"] == []
    assert all(c["passed"] is True for c in rec["checks"].values()), rec["checks"]


def test_monotone_tripped_by_a_model_robust_only_far_out(setup):
    """Broken at eps 0.05/0.1, 'robust' at 0.2: the pruned curve hides it, the raw probe shows it."""
    cfg, model, test = setup
    guarded = GuardedModel(model, test.images, test.labels, radius=0.15).eval()
    rec = evaluate(guarded, test, cfg)
    acc = rec["sweep"]["accuracy"]
    assert acc[3] == acc[2] <= 0.1  # nesting: broken at a smaller eps, so the pruned curve shows no rise
    raw = rec["checks"]["monotone"]["values"]["raw_accuracy"]
    assert raw[2] < 0.1 and raw[3] > 0.9
    assert "monotone" in failed(rec) and any(w.startswith("monotone:") for w in rec["warnings"])


def test_large_eps_tripped_by_a_zero_gradient_model(setup):
    cfg, model, test = setup
    rec = evaluate(QuantizedInputModel(model).eval(), test, cfg)
    assert rec["sweep"]["accuracy"] == [1.0, 1.0, 1.0, 1.0]  # PGD cannot move at all
    assert failed(rec) == {"large_eps"}
    assert rec["checks"]["large_eps"]["values"]["accuracy"] == 1.0


def test_autoattack_above_pgd_tripped_by_a_model_masked_on_the_ball_surface(setup):
    """APGD starts on the surface of the eps-ball, where the guarded model is flat and 'right';
    PGD from the clean image broke every sample at a smaller eps."""
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.autoattack.enabled = True
    cfg.eval.autoattack.n_samples = 8
    cfg.eval.autoattack.version = "custom"
    cfg.eval.autoattack.attacks = ["apgd-ce"]
    idx = torch.arange(len(test.labels))
    guarded = GuardedModel(model, test.images[idx], test.labels[idx], radius=0.15).eval()
    rec = evaluate(guarded, test, cfg)
    c = rec["checks"]["autoattack_vs_pgd"]
    assert c["passed"] is False and c["values"]["autoattack_accuracy"] > c["values"]["pgd_accuracy"]
    assert any(w.startswith("autoattack_vs_pgd:") for w in rec["warnings"])


def test_square_stronger_than_whitebox_tripped_by_a_zero_gradient_model(setup):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.autoattack.enabled = True
    cfg.eval.autoattack.n_samples = 8
    cfg.eval.autoattack.version = "custom"
    cfg.eval.autoattack.attacks = ["apgd-ce", "square"]
    cfg.eval.checks.probe_samples = 0
    rec = evaluate(QuantizedInputModel(model).eval(), test, cfg)
    c = rec["checks"]["square_vs_whitebox"]
    assert c["passed"] is False and c["values"]["square_only_broken"] == rec["autoattack"]["broken_by"]["square"] > 0
    assert rec["checks"]["monotone"]["passed"] is None  # no probe asked for


def test_clean_accuracy_that_does_not_reproduce(setup):
    cfg, model, test = setup
    rec = evaluate(NoisyModel(model, scale=5.0).eval(), test, cfg)
    assert "clean_reproduces" in failed(rec)
    assert rec["checks"]["clean_reproduces"]["values"]["mismatches"] > 0


def test_stored_record_reproduces_only_for_its_model(setup):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.checks.probe_samples = 0
    stored = evaluate(model, test, cfg)
    again = evaluate(model, test, cfg, reference=stored)
    assert again["checks"]["clean_reproduces_reference"]["passed"] is True
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.net.head.bias[0] += 50.0  # now it says class 0 for everything
    rec = evaluate(other.eval(), test, cfg, reference=stored)
    c = rec["checks"]["clean_reproduces_reference"]
    assert c["passed"] is False and "weights sha256 differs" in c["message"]
    assert c["values"]["stored_clean_accuracy"] == stored["clean_accuracy"]

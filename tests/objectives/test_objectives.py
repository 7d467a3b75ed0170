"""Training objectives: the registry, and each loss against an independent computation."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from rftbench.config import parse_config
from rftbench.errors import ConfigError, ObjectiveDefinitionError, UnknownNameError
from rftbench.objectives import MART, OBJECTIVES, PGDAT, TRADES, CrossEntropy, Objective, StepOutput, create_objective
from rftbench.params import Param


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, x_adv, y


def _linear_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 5))


def _np_log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_registry_holds_the_objectives_and_names_them_on_a_typo():
    assert {"ce", "pgd_at", "trades"} <= set(OBJECTIVES.names())
    with pytest.raises(UnknownNameError) as err:
        create_objective("pgdat")
    msg = str(err.value)
    assert "Did you mean 'pgd_at'" in msg and "trades" in msg and "ce" in msg
    assert isinstance(create_objective("ce"), CrossEntropy) and not CrossEntropy.uses_attack
    assert create_objective("trades", {"beta": 2.5}).values == {"beta": 2.5}
    assert create_objective("trades").attack == "trades_kl" and PGDAT.attack is None


def test_trades_loss_equals_an_independent_numpy_computation():
    model = _linear_model()
    x, x_adv, y = _batch()
    beta = 3.0
    out = TRADES(beta=beta)(model, x, y, x_adv)
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    lp = _np_log_softmax(x.reshape(8, -1).double().numpy() @ w.T + b)
    lq = _np_log_softmax(x_adv.reshape(8, -1).double().numpy() @ w.T + b)
    ce = -lp[np.arange(8), y.numpy()].mean()
    kl = (np.exp(lp) * (lp - lq)).sum(1).mean()  # KL(p_clean || p_adv), summed over classes
    assert out.loss.item() == pytest.approx(ce + beta * kl, rel=1e-5)
    assert kl > 1e-4  # the KL term is really present
    assert out.logits_clean is not None and out.logits_adv is not None
    assert create_objective("trades", {"beta": 0.0})(model, x, y, x_adv).loss.item() == pytest.approx(ce, rel=1e-5)


def test_trades_runs_clean_and_adversarial_images_through_separate_forwards():
    """With BatchNorm in training mode the clean logits must not depend on the adversarial half
    (as in the reference TRADES code, which calls the model twice)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 5)).train()
    twin = copy.deepcopy(model)
    x, x_adv, y = _batch()
    out = TRADES()(model, x, y, x_adv)
    assert torch.allclose(out.logits_clean, twin(x), atol=1e-6)
    assert torch.allclose(out.logits_adv, twin(x_adv), atol=1e-6)


def test_pgd_at_is_cross_entropy_on_adversarial_examples_and_clean_at_eps_zero():
    model = _linear_model(1)
    x, x_adv, y = _batch(1)
    out = PGDAT()(model, x, y, x_adv)
    assert out.loss.item() == pytest.approx(nn.functional.cross_entropy(model(x_adv), y).item(), rel=1e-6)
    assert out.logits_clean is None and out.logits_adv is not None
    clean = PGDAT()(model, x, y, None)
    assert clean.loss.item() == pytest.approx(nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)
    assert clean.logits_adv is None and clean.logits_clean is not None


def _np_softmax(z):
    return np.exp(_np_log_softmax(z))


def test_mart_loss_equals_an_independent_numpy_computation():
    """MART (Wang et al., 2020): BCE on adversarial logits + beta * mean(KL(p_clean || p_adv)
    * (1 - p_clean(y))), written here from the paper's formula in numpy."""
    model = _linear_model(2)
    x, x_adv, y = _batch(2)
    beta = 5.0
    out = create_objective(parse_config({"train": {"objective": {"name": "mart", "params": {"beta": beta}}}})
                           .train.objective)(model, x, y, x_adv)
    assert isinstance(create_objective("mart"), MART)
    w = model[1].weight.detach().double().numpy()
    b = model[1].bias.detach().double().numpy()
    p = _np_softmax(x.reshape(8, -1).double().numpy() @ w.T + b)
    q = _np_softmax(x_adv.reshape(8, -1).double().numpy() @ w.T + b)
    yy = y.numpy()
    rows = np.arange(8)
    q_wo_true = q.copy()
    q_wo_true[rows, yy] = -1
    runner_up = q_wo_true.argmax(1)  # the most likely wrong class under attack
    bce = -np.log(q[rows, yy]).mean() - np.log(1.0001 - q[rows, runner_up] + 1e-12).mean()
    kl = (p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1)
    expected = bce + beta * (kl * (1.0000001 - p[rows, yy])).mean()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logits_clean is not None and out.logits_adv is not None
    assert MART()(model, x, y, None).loss.item() == pytest.approx(
        nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)


def test_objective_parameters_are_declared_validated_and_searchable():
    with pytest.raises(ConfigError, match=r"objective 'trades': parameter 'beta'=-1.0 is out of bounds"):
        create_objective("trades", {"beta": -1.0})
    with pytest.raises(ConfigError, match=r"objective 'mart' has no parameter\(s\) 'gamma'; its parameters are: beta"):
        create_objective("mart", {"gamma": 1})
    assert [p.name for p in TRADES.params] == ["beta"] and TRADES.params[0].distribution().high == 20.0
    assert repr(create_objective("trades", {"beta": 2})) == "trades(beta=2)"


def test_a_new_objective_is_one_class_with_declared_params():
    @OBJECTIVES.register("scaled_ce_test")
    class ScaledCE(Objective):
        params = (Param("scale", 1.0, 0.1, 10.0),)

        def __call__(self, model, x, y, x_adv):
            logits = model(x)
            return StepOutput(self.values["scale"] * nn.functional.cross_entropy(logits, y), logits, None)

    try:
        model = _linear_model(3)
        x, _, y = _batch(3)
        obj = create_objective("scaled_ce_test", {"scale": 2.0})
        assert obj(model, x, y, None).loss.item() == pytest.approx(
            2 * nn.functional.cross_entropy(model(x), y).item(), rel=1e-6)
        with pytest.raises(ObjectiveDefinitionError, match="declares bad parameters"):
            OBJECTIVES.register("bad_objective_test")(type("Bad", (Objective,), {"params": (Param("a", 5, 0, 1),)}))
    finally:
        OBJECTIVES.unregister("scaled_ce_test")

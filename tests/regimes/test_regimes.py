"""Fine-tuning regimes: which parameters move (against the pretrained weights), phases of LP-FT
(eps and LR), bad input before any work, a user's regime plugin, resume mid-probe."""
import math

import pytest
import torch

from conftest import tiny_config
from resume_helpers import whole_and_resumed
from rftbench.errors import ConfigError
from rftbench.regimes import REGIMES, Regime, create_regime, register_regime
from rftbench.regimes.partial import model_blocks
from rftbench.task import build_model
from rftbench.training import Trainer, train
from rftbench.training.optim import make_optimizer


def small(**kw):
    """5 batches of 64 per epoch, PGD-1, no validation."""
    base = dict(data__val_fraction=0.5, attack__steps=1, train__epochs=2, train__val_samples=32,
                train__progress="off", eval__n_samples=32, train__val_every=0)
    base.update(kw)
    return tiny_config(**base)


def moved(cfg, res):
    """Names of model.net's parameters that differ from the pretrained start (head re-initialised
    the same way: build_model is seeded)."""
    start = build_model(cfg, 5).net.state_dict()
    trained = res.model.net.state_dict()
    names = {n for n, _ in res.model.net.named_parameters()}
    return {n for n in names if not torch.equal(start[n], trained[n])}, start, trained


def test_builtins_are_registered_with_declared_params():
    assert {"full", "linear_probe", "partial", "lp_ft"} <= set(REGIMES.names())
    assert [p.name for p in REGIMES.get("partial").params] == ["blocks"]
    assert REGIMES.get("lp_ft").params[0].distribution().low == 0.01


def test_partial_trains_the_last_blocks_and_the_head_only(workdir, tmp_path):
    cfg = small(model__regime={"name": "partial", "params": {"blocks": 2}})
    res = train(cfg, run_dir=tmp_path / "run")
    blocks, tail = model_blocks(res.model.net)
    assert len(blocks) == 8 and tail == ["head.weight", "head.bias"]  # small_cnn: 4 conv + 4 BN
    declared = set(tail) | set(blocks[-1]) | set(blocks[-2])
    changed, start, trained = moved(cfg, res)
    assert changed == declared
    for n in start:  # BatchNorm running statistics of the frozen part stay too (eval mode)
        if not any(n.startswith(d.rsplit(".", 1)[0] + ".") for d in declared):
            assert torch.equal(start[n], trained[n]), n


def test_partial_by_name_patterns(workdir, tmp_path):
    cfg = small(train__epochs=1, model__regime={"name": "partial", "options": {"patterns": ["features.0.*"]}})
    changed, _, _ = moved(cfg, train(cfg, run_dir=tmp_path / "run"))
    assert changed == {"features.0.weight", "features.0.bias", "head.weight", "head.bias"}


def test_bad_regimes_fail_before_any_work(workdir, tmp_path):
    model = build_model(small(), 5)
    with pytest.raises(ConfigError, match=r"blocks=9, but .* has 8 blocks"):
        create_regime(small(model__regime={"name": "partial", "params": {"blocks": 9}}).model.regime).prepare(model)
    with pytest.raises(ConfigError, match="pattern 'nope.*' matches no parameter"):
        create_regime(small(model__regime={"name": "partial", "options": {"patterns": ["nope.*"]}}).model.regime
                      ).prepare(model)
    for probe in (0, 1):
        with pytest.raises(ConfigError, match=r"'probe'=.* is out of bounds \[0.01, 0.99\]"):
            create_regime(small(model__regime={"name": "lp_ft", "params": {"probe": probe}}).model.regime)
    with pytest.raises(ConfigError, match="option eps must be one of whole, finetune"):
        create_regime(small(model__regime={"name": "lp_ft", "options": {"eps": "zero"}}).model.regime)
    with pytest.raises(ConfigError, match="blocks=9"):  # the Trainer asks before anything is trained or written
        Trainer(small(model__regime={"name": "partial", "params": {"blocks": 9}}),
                _task(small()), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="disagree"):
        small(model__finetune="full", model__regime={"name": "lp_ft"})


def _task(cfg):
    from rftbench.task import build_task

    return build_task(cfg)


def test_old_finetune_spelling_is_the_regime():
    cfg = small(model__finetune="linear_probe")
    assert cfg.model.regime.name == "linear_probe" and "model.finetune" not in cfg.flat()


def test_lp_ft_probes_then_unfreezes_with_eps_and_lr_phases(workdir, tmp_path, monkeypatch):
    from rftbench.attacks import TrainAttack

    seen = []
    original = TrainAttack.__call__
    monkeypatch.setattr(TrainAttack, "__call__", lambda atk, x, y: seen.append(atk.attack.eps) or original(atk, x, y))
    cfg = small(train__epochs=1, train__log_every=0, schedule={"name": "constant"},
                model__regime={"name": "lp_ft", "params": {"probe": 0.4}, "options": {"eps": "finetune", "lr": "restart"}})
    trainer = Trainer(cfg, _task(cfg))
    grads = []  # which parameters had a gradient at each optimizer step
    step = trainer.step.optimizer_step
    trainer.step.optimizer_step = lambda: grads.append({n for n, p in trainer.model.net.named_parameters()
                                                        if p.grad is not None}) or step()
    lrs = []
    sched_step = trainer.lr_schedule.step
    trainer.lr_schedule.step = lambda: lrs.append(trainer.optimizer.param_groups[0]["lr"]) or sched_step()
    trainer.run()
    head = {"head.weight", "head.bias"}
    assert [g == head for g in grads] == [True, True, False, False, False]  # probe: batches 0, 1 of 5
    assert seen == [0.2] * 3  # constant eps from the unfreeze on, none while probing
    # each phase its own cosine: 2 steps, then 3 (lr 0.02 x head scale 1)
    expect = [0.02 * 0.5 * (1 + math.cos(math.pi * s / n)) for n in (2, 3) for s in range(n)]
    assert lrs == pytest.approx(expect)


def test_lp_ft_default_phases_follow_the_whole_run(workdir, tmp_path):
    cfg = small(train__epochs=1, model__regime={"name": "lp_ft", "params": {"probe": 0.4}})
    trainer = Trainer(cfg, _task(cfg))
    assert trainer.phases.restart_steps() == ()
    assert [trainer.eps_ctl.eps(0, b) for b in range(5)] == pytest.approx(
        [min(b / 5 / 0.5, 1) * 0.2 for b in range(5)])  # linear warm-up 0.5 over all of training


def test_user_regime_plugin(workdir, tmp_path):
    @register_regime("test_bias_only")
    class BiasOnly(Regime):
        def trainable(self, model, phase):
            return {n for n, _ in model.net.named_parameters() if n.endswith(".bias")}

    try:
        cfg = small(train__epochs=1, model__regime={"name": "test_bias_only"})
        opt = make_optimizer(build_model(cfg, 5), cfg)
        assert {g["name"] for g in opt.param_groups} == {"backbone_nodecay", "head_nodecay"}
        changed, _, _ = moved(cfg, train(cfg, run_dir=tmp_path / "run"))
        assert changed and all(n.endswith(".bias") for n in changed)
    finally:
        REGIMES.unregister("test_bias_only")


@pytest.mark.parametrize("regime", [{"name": "lp_ft", "params": {"probe": 0.5}}, {"name": "linear_probe"}])
def test_resume_mid_probe_is_bit_identical(workdir, tmp_path, regime):
    cfg = small(model__regime=regime, train__checkpoint_every_steps=1, train__optimizer="adamw", train__lr=1e-3)
    whole, again = whole_and_resumed(cfg, tmp_path, 3)
    assert again.info["resumed_from"] == {"epoch": 0, "batch": 3}
    for k, v in whole.model.net.state_dict().items():
        assert torch.equal(v, again.model.net.state_dict()[k]), k
    assert [h["train/loss"] for h in whole.history] == [h["train/loss"] for h in again.history]


def test_the_run_records_regime_weights_and_trainable_count(workdir):
    from rftbench.experiments.experiment import run_experiment
    from rftbench.tracking.store import client_for

    cfg = small(train__epochs=1, model__regime={"name": "lp_ft", "params": {"probe": 0.4}},
                train__ema={"decay": 0.5, "evaluate": "both"}, train__log_mlflow_model=False)
    res = run_experiment(cfg)
    tags = client_for().get_run(res.run_id).data.tags
    n_all = sum(p.numel() for p in res.train.model.net.parameters())
    assert tags["rftbench.regime"] == "lp_ft(probe=0.4)" and tags["rftbench.weights"] == "ema"
    assert int(tags["rftbench.trainable_params"]) == n_all  # LP-FT's last phase trains everything
    assert res.record["train"]["regime"] == "lp_ft(probe=0.4)" and res.record["train"]["weights"] == "ema"
    also = res.record["also_scored"]
    assert also["weights"] == "raw" and 0 <= also["clean_accuracy"] <= 1
    probe = small(train__epochs=1, model__regime={"name": "linear_probe"})
    assert train(probe, run_dir=workdir / "p").info["trainable_params"] == 64 * 5 + 5  # the head of small_cnn


def test_shared_eps0_prefix_key_includes_the_regime():
    from rftbench.training.prefix import prefix_key

    keys = {prefix_key(small(model__regime=r), 1, "w") for r in
            ({"name": "full"}, {"name": "linear_probe"}, {"name": "lp_ft", "options": {"lr": "restart"}},
             {"name": "partial", "params": {"blocks": 2}}, {"name": "partial", "params": {"blocks": 3}})}
    assert len(keys) == 5


def test_regimes_list_cli(capsys):
    import json

    from rftbench.cli import main

    assert main(["regimes", "list", "--json"]) == 0
    items = {it["name"]: it for it in json.loads(capsys.readouterr().out)}
    assert {"full", "linear_probe", "partial", "lp_ft", "lora"} <= set(items)
    assert [p["name"] for p in items["lora"]["params"]] == ["rank", "alpha", "dropout"]
    assert items["lp_ft"]["options"] == {"eps": "whole", "lr": "whole"}

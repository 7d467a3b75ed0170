"""The trainer: param groups, eps schedule per step / epoch, skipped attacks, accumulation,
divergence handling and progress output. Toy sizes (digits, small_cnn, a few batches)."""
import io

import pytest
import torch
import yaml
from torch import nn

from conftest import tiny_config
from rftbench.attacks import TrainAttack
from rftbench.cli import main
from rftbench.errors import ConfigError
from rftbench.objectives import PGDAT, create_objective
from rftbench.scheduling import create_schedule
from rftbench.task import build_model
from rftbench.tracking.store import client_for
from rftbench.training import (BatchMeter, PlainProgress, RichProgress, TrainingState, TrainProgress, TrainStep,
                               make_lr_schedule, make_optimizer, make_progress, train)


def small(**kw):
    """5 batches of 64 per epoch, PGD-1, a tiny validation; no evaluation needed."""
    base = dict(data__val_fraction=0.5, attack__steps=1, train__epochs=2, train__val_samples=32,
                train__progress="off", eval__n_samples=32)
    base.update(kw)
    return tiny_config(**base)


class CountingAttack:
    """Counts the training attack's calls (validation's PGD sweep is not counted) and their eps."""

    def __init__(self, monkeypatch):
        self.eps = []
        original = TrainAttack.__call__

        def call(atk, x, y):
            self.eps.append(atk.attack.eps)
            return original(atk, x, y)

        monkeypatch.setattr(TrainAttack, "__call__", call)


def test_eps_zero_steps_never_call_the_attack(workdir, monkeypatch, tmp_path):
    calls = CountingAttack(monkeypatch)
    cfg = small(schedule={"name": "epsilon_scheduling", "params": {"start": 0.5, "end": 0.8}})
    res = train(cfg, run_dir=tmp_path / "run")
    total = res.total_steps
    sched = create_schedule("epsilon_scheduling", {"start": 0.5, "end": 0.8})
    expected = [sched.eps_at(g, total, 0.2) for g in range(total)]
    assert expected.count(0.0) >= total // 2  # the first half has eps = 0
    assert calls.eps == pytest.approx([e for e in expected if e > 0])
    assert res.attack_steps == len(calls.eps)
    calls.eps.clear()
    res = train(small(schedule={"name": "none"}, train__epochs=1), run_dir=tmp_path / "none")
    assert calls.eps == [] and res.attack_steps == 0


def test_per_epoch_granularity_holds_eps_for_a_whole_epoch(workdir, monkeypatch, tmp_path):
    calls = CountingAttack(monkeypatch)
    out = io.StringIO()
    cfg = small(train__epochs=3, train__log_every=2, schedule={"name": "linear", "params": {"warmup": 1.0},
                                                               "granularity": "epoch"})
    res = train(cfg, run_dir=tmp_path / "run", progress=PlainProgress(out))
    spe = res.info["steps_per_epoch"]
    # alpha = epoch / 3: no attack in epoch 0, then target/3 and 2*target/3 for every batch
    assert calls.eps == pytest.approx([0.2 / 3] * spe + [0.4 / 3] * spe)
    assert [h["train/eps"] for h in res.history] == pytest.approx([0.0, 0.2 / 3, 0.4 / 3])
    text = out.getvalue()
    assert "epoch 3/3 done" in text and "img/s" in text and "acc clean" in text and "adv" in text
    assert text.count("step ") == 3 * spe // 2


def test_linear_probe_freezes_the_backbone_and_head_lr_is_scaled(workdir, tmp_path):
    cfg = small(model={"name": "small_cnn", "finetune": "linear_probe", "head_lr_scale": 10.0}, train__epochs=1)
    res = train(cfg, run_dir=tmp_path / "run")
    start = build_model(cfg, 5)  # the same pretrained weights (the head is re-initialised)
    trained = res.model.net.state_dict()
    for name, value in start.net.state_dict().items():
        if name.startswith("head."):
            assert not torch.equal(value, trained[name]), name
        else:  # weights and BatchNorm running statistics of the backbone
            assert torch.equal(value, trained[name]), name
    opt = make_optimizer(start, cfg)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in start.head_parameters()}
    assert all(g["lr"] == pytest.approx(0.2) for g in opt.param_groups)  # 10 x train.lr
    assert not any(p.requires_grad for n, p in start.net.named_parameters() if not n.startswith("head."))

    full = small(model={"name": "small_cnn", "head_lr_scale": 0.5})
    groups = {g["name"]: g for g in make_optimizer(build_model(full, 5), full).param_groups}
    assert groups["backbone"]["lr"] == pytest.approx(0.02) and groups["head"]["lr"] == pytest.approx(0.01)
    assert groups["backbone_nodecay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 5e-4


def test_gradient_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    twin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    twin.load_state_dict(model.state_dict())
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    ce = create_objective("ce")
    cpu = torch.device("cpu")
    step = TrainStep(model, ce, None, torch.optim.SGD(model.parameters(), lr=0.5), device=cpu)
    step(x[:3], y[:3], 0.0, loss_weight=3 / 8, optimizer_step=False)
    step(x[3:], y[3:], 0.0, loss_weight=5 / 8, optimizer_step=True)
    big = TrainStep(twin, ce, None, torch.optim.SGD(twin.parameters(), lr=0.5), device=cpu)
    big(x, y, 0.0)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert step.opt_steps == 1 and big.opt_steps == 1


def test_bf16_autocast_and_channels_last_step_on_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(64, 3))
    before = [p.detach().clone() for p in model.parameters()]
    meter = BatchMeter(torch.device("cpu"))
    step = TrainStep(model, create_objective("ce"), None, torch.optim.SGD(model.parameters(), lr=0.1),
                     device=torch.device("cpu"), amp_dtype=torch.bfloat16, channels_last=True)
    loss = step(torch.rand(8, 1, 6, 6), torch.randint(0, 3, (8,)), 0.0, meters=[meter])
    assert torch.isfinite(loss) and step.diverged_at() is None
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert meter.values()["loss"] == pytest.approx(loss.item(), rel=1e-3) and meter.n == 8


def test_fp16_without_cuda_is_a_config_error(workdir, tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        train(small(train__precision="fp16", train__device="cpu"), run_dir=tmp_path / "run")


def test_nan_loss_stops_the_run_marks_it_failed_and_keeps_the_last_good_checkpoint(workdir, monkeypatch, capsys):
    calls = {"n": 0}
    original = PGDAT.__call__

    def nan_in_second_epoch(self, model, x, y, x_adv):
        calls["n"] += 1
        out = original(self, model, x, y, x_adv)
        if calls["n"] > 6:  # epoch 0 has 5 batches; batch 1 of epoch 1 diverges
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(PGDAT, "__call__", nan_in_second_epoch)
    cfg = small(train__epochs=3)
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert main(["train", str(path), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "error: the training loss became nan at epoch 1, batch 1" in err and "Traceback" not in err
    assert "last good checkpoint is kept" in err
    client = client_for()
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["rftbench.error"].startswith("TrainingDivergedError")
    run_dir = workdir / "rftbench-runs" / run.info.run_id
    state = TrainingState.load(run_dir / "state.pt")
    assert (state.epoch, state.batch) == (1, 0)  # written after epoch 0, never after the NaN
    assert all(torch.isfinite(v).all() for v in state.model.values() if v.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()


def test_progress_modes():
    buf = io.StringIO()
    assert isinstance(make_progress("auto", buf), PlainProgress)  # not a terminal
    assert type(make_progress("off")) is TrainProgress
    with pytest.raises(ConfigError, match="train.progress"):
        make_progress("fancy")
    from rich.console import Console

    out = io.StringIO()
    rp = RichProgress(Console(file=out, force_terminal=True, width=200))
    rp.start(name="run", epochs=2, steps_per_epoch=4, done_steps=0)
    rp.advance(3)
    rp.update({"epoch": 0, "step": 3, "eps": 0.05, "lr": 0.01, "loss": 0.5, "acc_clean": 0.9, "acc_adv": 0.4,
               "images_per_s": 123.0})
    rp.epoch_end(0, {"train/loss": 0.5, "train/eps": 0.05, "val/expected_robustness": 0.3})
    rp.close()
    text = out.getvalue()
    assert "eps 0.0500" in text and "acc clean 0.900 adv 0.400" in text and "123 img/s" in text
    assert "ER 0.300" in text


def test_lr_warmup_then_cosine_and_adamw_groups():
    import math

    cfg = small(train__optimizer="adamw", train__lr=0.1, train__weight_decay=0.01)
    model = build_model(cfg, 5)
    opt = make_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups}["backbone"] == 0.01
    sched = make_lr_schedule(opt, total_steps=10, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.1 * (s + 1) / 4 for s in range(4)] + [0.1 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 6))
                                                        for s in range(4, 10)]
    assert lrs == pytest.approx(expected)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    step = TrainStep(model, create_objective("ce"), None, torch.optim.SGD(model.parameters(), lr=1.0),
                     device=torch.device("cpu"), grad_clip=0.01)
    step(torch.rand(8, 1, 4, 4) * 100, torch.randint(0, 3, (8,)), 0.0)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)  # lr 1 x a gradient clipped to 0.01


def test_a_batch_that_cannot_give_every_ddp_rank_a_sample_is_a_config_error(workdir, monkeypatch):
    """Before any process group is used: a global batch (or an epoch's last batch) smaller than
    the rank count would leave a rank an empty slice and a NaN loss."""
    from rftbench.task import build_task
    from rftbench.training import BatchPlan, Trainer
    from rftbench.training import distributed as ddp

    ddp.check_batches(BatchPlan(129, 64, 1, 1), 4)  # last batch of 1: dropped
    ddp.check_batches(BatchPlan(130, 64, 1, 1), 2)
    with pytest.raises(ConfigError, match="last batch of every epoch .*leave 2.* 4 DDP ranks"):
        ddp.check_batches(BatchPlan(130, 64, 1, 1), 4)
    cfg = small()
    task = build_task(cfg)
    monkeypatch.setattr(ddp, "current", lambda: ddp.DistInfo(0, 65))
    with pytest.raises(ConfigError, match="data.batch_size 64 cannot be split over 65 DDP ranks"):
        Trainer(cfg, task)

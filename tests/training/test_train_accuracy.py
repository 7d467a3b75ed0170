"""Training accuracies: ``train/acc_clean`` on every batch, ``train/acc_adv`` on the attacked
ones, ``train/acc_clean_attacked`` on exactly those, each recounted here by hand from the
weights each batch saw; the extra clean forward changes nothing about training."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from conftest import tiny_config
from rftbench.objectives import create_objective
from rftbench.training import PlainProgress, TrainStep
from rftbench.training.callbacks import ProgressCallback
from rftbench.training.step import BatchMeter, running_stats_kept
from rftbench.training.trainer import Trainer


class RecordingObjective:
    """The real objective, called as it is; it also keeps what each call was given."""

    def __init__(self, objective):
        self.inner, self.calls = objective, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, model, x, y, x_adv):
        self.calls.append(None if x_adv is None else x_adv.detach().clone())
        return self.inner(model, x, y, x_adv)


class RecordingTrainer(Trainer):
    """The trainer as it is; before each batch it keeps a copy of the model (weights, buffers and
    train/eval flags as that batch finds them) and the batch."""

    def batch(self, epoch, b, x, y):
        self.seen.append((epoch, copy.deepcopy(self.model), x.clone(), y.clone()))
        return super().batch(epoch, b, x, y)


def _hand_counts(trainer):
    """Per epoch: (samples, clean correct, attacked samples, adv correct, clean correct on attacked)."""
    out = {}
    for (epoch, model, x, y), x_adv in zip(trainer.seen, trainer.step.objective.calls, strict=True):
        n, cc, na, ca, cca = out.get(epoch, (0, 0, 0, 0, 0))
        with torch.no_grad():  # the copy is in the mode the batch trained in (BatchNorm: batch statistics)
            clean_ok = int((model(x).argmax(1) == y).sum())
            adv_ok = None if x_adv is None else int((model(x_adv).argmax(1) == y).sum())
        n, cc = n + len(y), cc + clean_ok
        if adv_ok is not None:
            na, ca, cca = na + len(y), ca + adv_ok, cca + clean_ok
        out[epoch] = (n, cc, na, ca, cca)
    return out


def test_train_accuracies_equal_a_count_by_hand_on_the_same_batches(workdir, tmp_path):
    # 2 epochs x 5 batches; the paper's schedule keeps eps at 0 for the first 24% of the steps, so
    # epoch 0 is attacked on some batches only and epoch 1 on all; lr is high enough that the
    # weights move visibly from batch to batch; log_every 3 puts logging steps mid-epoch
    cfg = tiny_config(data__val_fraction=0.5, attack__steps=1, schedule__name="epsilon_scheduling",
                      schedule__params={}, train__lr=0.1, train__log_every=3, train__progress="off")
    from rftbench.task import build_task

    trainer = RecordingTrainer(cfg, build_task(cfg), validate=False,
                               callbacks=[ProgressCallback(PlainProgress(lines := io.StringIO()))])
    trainer.seen = []
    trainer.step.objective = RecordingObjective(trainer.step.objective)
    trainer.run()
    counts = _hand_counts(trainer)
    assert len(trainer.seen) == 10 and set(counts) == {0, 1}
    n0, _, na0, _, _ = counts[0]
    assert 0 < na0 < n0 and counts[1][2] == counts[1][0]  # a partly attacked epoch, then a fully attacked one
    for epoch, (n, cc, na, ca, cca) in counts.items():
        got = trainer.history[epoch]
        assert got["train/acc_clean"] == cc / n  # every sample of the epoch, counted once
        assert got["train/acc_adv"] == ca / na
        assert got["train/acc_clean_attacked"] == cca / na
        assert got["train/attacked_frac"] == na / n
    # what it replaced would differ: the unattacked batches alone, or an eval-mode forward
    assert counts[0][1] / n0 != (counts[0][1] - counts[0][4]) / (n0 - na0)
    eval_ok = 0
    for _, model, x, y in trainer.seen[5:]:
        with torch.no_grad():
            eval_ok += int((model.eval()(x).argmax(1) == y).sum())
    assert eval_ok / counts[1][0] != trainer.history[1]["train/acc_clean"]
    # the progress line shows the same numbers
    text = lines.getvalue()
    first = trainer.history[0]
    assert (f"acc clean {first['train/acc_clean']:.3f} adv {first['train/acc_adv']:.3f} "
            f"({first['train/attacked_frac']:.0%} of samples attacked; "
            f"clean on them {first['train/acc_clean_attacked']:.3f})") in text
    last = trainer.history[1]
    assert f"acc clean {last['train/acc_clean']:.3f} adv {last['train/acc_adv']:.3f}  " in text


class DropoutNet(nn.Module):
    """A tiny net with BatchNorm and dropout: a clean forward could touch running stats and the RNG."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("objective", ["pgd_at", "trades"])
def test_measuring_clean_accuracy_changes_nothing_about_training(objective):
    """The same steps with and without meters end with identical weights, BatchNorm statistics
    and RNG state (same computation by construction: the measurement must be invisible)."""
    from rftbench.attacks import TrainAttack

    def run(with_meters: bool):
        torch.manual_seed(0)
        model = DropoutNet().train()
        obj = create_objective(objective)
        attack = TrainAttack(model, obj.attack or "pgd", "Linf", 2, 2.5 / 2, True, "eval")
        step = TrainStep(model, obj, attack, torch.optim.SGD(model.parameters(), lr=0.5), device=torch.device("cpu"))
        meter = BatchMeter(torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        for i in range(4):
            x, y = torch.rand(8, 1, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
            step(x, y, 0.0 if i == 0 else 0.1, step_index=i, meters=[meter] if with_meters else ())
        return model.state_dict(), torch.get_rng_state(), meter

    (w1, rng1, meter), (w2, rng2, _) = run(True), run(False)
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert torch.equal(rng1, rng2)  # dropout in the clean forward drew from a forked RNG
    v = meter.values()
    assert meter.n == meter.n_clean == 32 and meter.n_adv == 24 and v["attacked_frac"] == 0.75


def test_running_stats_kept_leaves_buffers_and_modes_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.InstanceNorm2d(2, track_running_stats=True,
                                                                                 affine=False))
    net.train()
    net[1].running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 1, 5, 5)
    with torch.no_grad():
        reference = copy.deepcopy(net)(x)  # an ordinary training-mode forward (it updates the copy's stats)
        with running_stats_kept(net):
            out = net(x)
    assert torch.equal(out, reference)  # batch statistics, as in training
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm skipped, InstanceNorm put back
    assert net.training and net[1].track_running_stats


def test_meter_state_round_trip_and_copy_keep_the_attacked_sums_apart():
    cpu = torch.device("cpu")
    m = BatchMeter(cpu)
    y = torch.tensor([0, 1, 1, 0])
    right, wrong = torch.eye(2)[y], torch.eye(2)[1 - y]
    m.add(torch.tensor(1.0), y, 0.0, right, None)  # unattacked, all clean right
    m.add(torch.tensor(2.0), y, 0.1, wrong, right)  # attacked: clean all wrong, adversarial all right
    v = m.values()
    assert v["acc_clean"] == 0.5 and v["acc_adv"] == 1.0 and v["acc_clean_attacked"] == 0.0
    assert v["attacked_frac"] == 0.5
    twin = BatchMeter(cpu)
    twin.load(m.state())
    assert twin.values() == v
    c = copy.copy(m)
    c.attacked.correct_clean = torch.tensor(99.0, dtype=torch.float64)
    assert m.values() == v  # a copy's child is its own
    old = {k: m.state()[k] for k in ("sums", "counts", "eps_sum")}  # a state written before the child existed
    twin.load(old)
    assert "acc_clean_attacked" not in twin.values() and twin.values()["acc_clean"] == 0.5

"""The trainer's callback mechanism: hook order, a raising callback stopping the run cleanly
(and the run then resuming bit-identically), signal stop, pruning, per-epoch functions and the
MLflow callback's metric names and steps. Toy sizes (digits, small_cnn, 5 batches per epoch)."""
import os
import signal

import pytest
import torch

from conftest import tiny_config
from rftbench.errors import ConfigError
from rftbench.task import build_task
from rftbench.training import (Callback, MlflowCallback, OptunaPruning, PerEpochCallback, Trainer, TrainingInterrupted,
                               TrainingState, TrainProgress, train)


def small(**kw):
    """2 epochs of 5 batches of 64, PGD-1, a 32-sample validation after every epoch."""
    base = dict(data__val_fraction=0.5, attack__steps=1, train__epochs=2, train__val_samples=32,
                train__val_every=1, train__progress="off", train__log_every=2, eval__n_samples=32)
    base.update(kw)
    return tiny_config(**base)


class Recorder(Callback):
    """Records every hook call as a tuple."""

    def __init__(self):
        self.calls = []

    def on_run_start(self, trainer):
        self.calls.append(("run_start", trainer.start_epoch, trainer.start_batch))

    def on_batch_end(self, trainer, batch):
        self.calls.append(("batch", batch.epoch, batch.batch, batch.step, batch.optimizer_step,
                           None if batch.stats is None else sorted(batch.stats)))

    def on_checkpoint(self, trainer, path):
        self.calls.append(("checkpoint",) + trainer.saved_at)

    def on_epoch_end(self, trainer, epoch, metrics):
        self.calls.append(("epoch", epoch, sorted(k for k in metrics if k.startswith("val/"))))

    def on_run_end(self, trainer, result):
        self.calls.append(("run_end", result.total_steps))

    def on_exception(self, trainer, exc):
        self.calls.append(("exception", type(exc).__name__))


class ClosingProgress(TrainProgress):
    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def test_a_custom_callback_sees_every_hook_in_order(workdir, tmp_path):
    rec = Recorder()
    res = train(small(train__checkpoint_every_steps=2), run_dir=tmp_path / "run", callbacks=[rec])
    spe = res.info["steps_per_epoch"]
    assert spe == 5
    val = ["val/acc_clean", "val/acc_pgd", "val/expected_robustness"]
    stats = ["acc_adv", "acc_clean", "acc_clean_attacked", "attacked_frac", "eps", "images_per_s", "loss", "lr"]
    expected = [("run_start", 0, 0)]
    for e in range(2):
        for b in range(spe):
            g = e * spe + b + 1
            expected.append(("batch", e, b, g, True, stats if g % 2 == 0 else None))
            if g % 2 == 0 and b < spe - 1:  # every 2 optimizer steps, never at an epoch's last batch
                expected.insert(-1, ("checkpoint", e, b + 1))  # the checkpoint callback runs first
        expected += [("checkpoint", e + 1, 0), ("epoch", e, val)]
    expected.append(("run_end", 2 * spe))
    assert rec.calls == expected
    assert [h["epoch"] for h in res.history] == [0, 1] and (tmp_path / "run" / "model.safetensors").is_file()


class Boom(Callback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_batch_end(self, trainer, batch):
        if batch.step == self.at_step:
            raise RuntimeError("boom")


def test_a_raising_callback_stops_the_run_cleanly_and_the_run_resumes_bit_identically(workdir, tmp_path):
    cfg = small(train__checkpoint_every_steps=2, train__val_every=2)
    rec, progress = Recorder(), ClosingProgress()
    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        train(cfg, run_dir=tmp_path / "run", callbacks=[rec, Boom(at_step=9)], progress=progress)
    assert rec.calls[-1] == ("exception", "RuntimeError") and rec.calls[-2][:4] == ("batch", 1, 3, 9)
    assert progress.closed == 1 and signal.getsignal(signal.SIGTERM) is handler_before
    state = TrainingState.load(tmp_path / "run" / "state.pt")
    assert (state.epoch, state.batch) == (1, 3) and len(state.history) == 1  # saved after 8 optimizer steps
    assert not (tmp_path / "run" / "model.safetensors").exists()

    rec = Recorder()
    resumed = train(cfg, run_dir=tmp_path / "run", resume=True, callbacks=[rec])
    assert resumed.info["resumed_from"] == {"epoch": 1, "batch": 3} and rec.calls[0] == ("run_start", 1, 3)
    assert [c[3] for c in rec.calls if c[0] == "batch"] == [9, 10]
    reference = train(small(train__val_every=2), run_dir=tmp_path / "reference")
    for k, v in reference.model.net.state_dict().items():
        assert torch.equal(v, resumed.model.net.state_dict()[k]), k
    keys = ("train/loss", "train/acc_adv", "train/eps", "train/lr", "val/expected_robustness")
    assert ([{k: h.get(k) for k in keys} for h in resumed.history]
            == [{k: h.get(k) for k in keys} for h in reference.history])
    assert resumed.attack_steps == reference.attack_steps


class SendSignal(Callback):
    def on_batch_end(self, trainer, batch):
        if batch.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_in_process_saves_at_the_next_optimizer_step_and_restores_the_handlers(workdir, tmp_path):
    handler_before = signal.getsignal(signal.SIGTERM)
    rec = Recorder()
    # accumulation over 2 batches: batch 2 (0-based) ends no group, batch 3 does
    with pytest.raises(TrainingInterrupted, match=r"SIGTERM received: .* epoch 0, batch 4"):
        train(small(train__accum_steps=2), run_dir=tmp_path / "run", callbacks=[SendSignal(), rec])
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert ("checkpoint", 0, 4) in rec.calls and rec.calls[-1] == ("exception", "TrainingInterrupted")
    state = TrainingState.load(tmp_path / "run" / "state.pt")
    assert (state.epoch, state.batch, state.opt_steps) == (0, 4, 2)


class FakeTrial:
    def __init__(self, prune_at):
        self.prune_at, self.reported = prune_at, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return len(self.reported) - 1 == self.prune_at


def test_per_epoch_function_and_optuna_pruning(workdir, tmp_path):
    optuna = pytest.importorskip("optuna")
    seen = []
    trial = FakeTrial(prune_at=1)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 1"):
        train(small(train__epochs=3), run_dir=tmp_path / "run",
              callbacks=[PerEpochCallback(lambda e, m: seen.append((e, m["val/expected_robustness"]))),
                         OptunaPruning(trial)])
    assert [e for e, _ in seen] == [0, 1] and trial.reported == seen


class FakeTracker:
    def __init__(self):
        self.metrics, self.tags, self.per_step = [], {}, set()

    def log_metrics(self, metrics, step=None, *, per_step=False):
        self.metrics.extend((k, step) for k in metrics)
        self.per_step |= {k for k in metrics if per_step}

    def set_tags(self, tags, *, per_step=False):
        self.tags.update(tags)
        self.per_step |= {k for k in tags if per_step}


def test_mlflow_callback_metric_names_steps_and_tags(workdir, tmp_path):
    tracker = FakeTracker()
    train(small(), run_dir=tmp_path / "run", tracker=tracker)
    steps = {}
    for name, step in tracker.metrics:
        steps.setdefault(name, []).append(step)
    assert steps["train_step/eps"] == [2, 4, 6, 8, 10] and steps["train_step/images_per_s"] == [2, 4, 6, 8, 10]
    assert {k for k in steps if k.startswith("train_step/")} == {
        f"train_step/{k}" for k in ("loss", "eps", "lr", "images_per_s", "acc_clean", "acc_adv", "acc_clean_attacked",
                                    "attacked_frac")}
    assert {k for k in steps if not k.startswith("train_step/")} == {
        "train/loss", "train/eps", "train/acc_clean", "train/acc_adv", "train/acc_clean_attacked",
        "train/attacked_frac", "train/lr", "train/lr_head",
        "train/images_per_s", "train/epoch_time_s", "val/acc_clean", "val/acc_pgd", "val/expected_robustness"}
    assert steps["train/loss"] == [0, 1] and steps["val/expected_robustness"] == [0, 1]
    # what a full tracking spool may drop: the per-step window metrics and the heartbeat only
    assert tracker.per_step == {k for k in steps if k.startswith("train_step/")} | {"rftbench.heartbeat"}
    assert int(tracker.tags["rftbench.pid"]) == os.getpid() and "rftbench.heartbeat" in tracker.tags
    assert tracker.tags["rftbench.torch_threads"] == str(torch.get_num_threads())
    assert "rftbench.resumed_from" not in tracker.tags
    MlflowCallback(tracker)  # importable and constructible on its own


def test_the_plain_path_needs_no_run_dir(workdir):
    cfg = small(train__objective="ce", schedule={"name": "none"}, train__epochs=1)
    trainer = Trainer(cfg, build_task(cfg), validate=False)
    res = trainer.run()
    assert res.checkpoint is None and res.attack_steps == 0 and res.history[0]["train/loss"] > 0
    assert not any(k.startswith("val/") for k in res.history[0]) and not res.model.training
    with pytest.raises(ConfigError, match="no run_dir"):
        trainer.save_state(1, 0)


def test_stop_request_first_signal_asks_the_second_interrupts_and_handlers_come_back():
    from rftbench.signals import StopRequest

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopRequest("work") as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match="second SIGINT: work stopped at once"):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

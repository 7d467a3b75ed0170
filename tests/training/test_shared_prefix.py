"""Shared eps-0 prefixes: a run that restores the eps-0 epochs another run trained ends with the
weights and validation history of a run that trains them itself, and never reuses an epoch whose
schedule differs, whose training settings differ, or whose stored state is unreadable."""
import torch

from conftest import tiny_config
from rftbench.training import Callback, TrainingState, train
from rftbench.training.prefix import SharedPrefix, eps0_epochs, prefix_key


def cfg(start, end, **kw):
    base = dict(data__val_fraction=0.5, attack__steps=1, train__epochs=4, train__val_samples=32,
                train__val_every=1, train__progress="off", eval__n_samples=32,
                schedule__name="epsilon_scheduling", schedule__params={"start": start, "end": end})
    base.update(kw)
    return tiny_config(**base)


class Seen(Callback):
    """Records which epochs reached ``on_epoch_end`` and with which metrics."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, trainer, epoch, metrics):
        self.epochs.append((epoch, dict(metrics)))


def run(c, tmp, name, shared=None):
    seen = Seen()
    cbs = ([SharedPrefix(shared)] if shared is not None else []) + [seen]
    res = train(c, run_dir=tmp / name, callbacks=cbs)
    return res, seen


def _same_weights(a, b):
    sa, sb = a.model.net.state_dict(), b.model.net.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _val(history):
    return [{k: v for k, v in h.items() if k.startswith("val/")} for h in history]


def test_reused_eps0_epochs_give_the_weights_and_history_of_training_them(workdir, tmp_path):
    shared = tmp_path / "shared"
    first, _ = run(cfg(0.6, 0.9), tmp_path, "a", shared)  # eps 0 through 2 of 4 epochs: writes 2 entries
    assert first.info["epochs_reused"] == 0 and len(list(shared.glob("*.pt"))) == 2
    second, seen = run(cfg(0.55, 0.7), tmp_path, "b", shared)
    alone, _ = run(cfg(0.55, 0.7), tmp_path, "c")
    assert second.info["epochs_reused"] == 2
    assert [e for e, _ in seen.epochs] == [0, 1, 2, 3]  # reused epochs reach every callback
    assert "val/expected_robustness" in seen.epochs[0][1]
    assert _same_weights(second, alone)
    assert _val(second.history) == _val(alone.history)
    assert second.attack_steps == alone.attack_steps > 0


def test_no_reuse_across_other_settings_or_past_the_eps0_prefix(workdir, tmp_path):
    shared = tmp_path / "shared"
    run(cfg(0.6, 0.9), tmp_path, "a", shared)
    other_lr, _ = run(cfg(0.6, 0.9, train__lr=0.01), tmp_path, "b", shared)
    assert other_lr.info["epochs_reused"] == 0  # a training knob in the key
    early, _ = run(cfg(0.3, 0.9), tmp_path, "c", shared)  # eps > 0 within epoch 2: only epoch 1 is shared
    assert early.info["epochs_reused"] == 1
    assert prefix_key(cfg(0.6, 0.9), 1) == prefix_key(cfg(0.3, 0.5, name="x"), 1) != prefix_key(cfg(0.6, 0.9), 2)
    assert prefix_key(cfg(0.6, 0.9), 1, "a") != prefix_key(cfg(0.6, 0.9), 1, "b")  # other starting weights


def test_other_starting_weights_share_nothing(workdir, tmp_path):
    from rftbench.task import build_task

    shared = tmp_path / "shared"
    run(cfg(0.6, 0.9), tmp_path, "a", shared)
    c = cfg(0.6, 0.9)
    task = build_task(c)
    with torch.no_grad():
        next(task.model.parameters()).add_(1e-3)  # say, a pretrained checkpoint that changed
    res = train(c, run_dir=tmp_path / "b", task=task, callbacks=[SharedPrefix(shared)])
    assert res.info["epochs_reused"] == 0 and len(list(shared.glob("*.pt"))) == 4


def test_eps0_epochs_counts_whole_epochs_at_eps_zero(workdir, tmp_path):
    from rftbench.task import build_task
    from rftbench.training import Trainer

    c = cfg(0.55, 0.7)
    assert eps0_epochs(Trainer(c, build_task(c))) == 2
    c = cfg(0.0, 0.5)
    assert eps0_epochs(Trainer(c, build_task(c))) == 0


def test_a_corrupt_entry_is_trained_instead(workdir, tmp_path, caplog):
    shared = tmp_path / "shared"
    run(cfg(0.6, 0.9), tmp_path, "a", shared)
    for p in shared.glob("*.pt"):
        p.write_bytes(b"torn")
    res, _ = run(cfg(0.6, 0.9), tmp_path, "b", shared)
    alone, _ = run(cfg(0.6, 0.9), tmp_path, "c")
    assert res.info["epochs_reused"] == 0 and "unreadable" in caplog.text
    assert len([TrainingState.load(p) for p in shared.glob("*.pt")]) == 2  # stored again, readable
    assert _same_weights(res, alone)


def test_a_failed_store_only_warns(workdir, tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    res, _ = run(cfg(0.6, 0.9), tmp_path, "a", blocked / "shared")
    assert res.info["epochs_reused"] == 0 and "could not store" in caplog.text

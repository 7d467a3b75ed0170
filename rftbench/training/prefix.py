"""Shared eps = 0 prefixes: epochs that several runs of a schedule search train identically,
trained once and reused.

Every schedule of the Epsilon-Scheduling family starts with eps = 0 for a fraction of training
(``start``), and at eps = 0 the attack is skipped: two trials that differ only in the schedule
train the same model, bit for bit, until the first batch with eps > 0. :class:`SharedPrefix`
(a :class:`~rftbench.training.callbacks.Callback`) stores the training state at the end of each
such all-eps-0 epoch under a key of everything that shapes training except the schedule (the
config, the starting weights' digest, the versions: :func:`prefix_key`), and hands it back to a
later run with the same key, which then restores it instead of training the epoch (the
trainer's ``reuse_epoch`` hook). The reused epoch goes through
every callback's ``on_epoch_end`` with the metrics the first run recorded (MLflow, pruning,
checkpoints), so a run that reuses its prefix is the run that would have trained it.

On CPU with ``data.num_workers: 0`` a run that reuses a prefix ends with the same weights as one
that trains it (tested); elsewhere it is the same training up to the device's nondeterminism.
Entries are written atomically, so workers of one study may share a directory; a corrupt entry
is a miss (with a warning) and is written again. ``trainer.epochs_reused`` counts the epochs a
run restored.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from ..errors import CheckpointError
from .callbacks import Callback
from .state import STATE_FORMAT, TrainingState, config_without

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger(__name__)

# Config keys that shape neither the eps-0 training nor its validation metrics (the schedule's
# only effect, eps per batch, is checked batch by batch instead).
NOT_IN_KEY = ("name", "experiment", "output_dir", "tracking.", "schedule.", "search", "train.progress",
              "train.checkpoint_every", "train.checkpoint_every_steps")


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """A digest of a model's weights (the pretrained starting point: the config names it, the
    digest says it is the same file)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(state_dict.items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def prefix_key(cfg, epochs: int, start_weights: str = "") -> str:
    """The hex key of the state after ``epochs`` epochs at eps = 0 of a run of ``cfg`` that
    started from weights with digest ``start_weights``."""
    from .. import __version__

    ident = {"config": config_without(cfg, NOT_IN_KEY), "epochs_at_eps0": epochs, "state_format": STATE_FORMAT,
             "rftbench": __version__, "torch": torch.__version__, "start_weights": start_weights}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]


def eps0_epochs(trainer: "Trainer") -> int:
    """How many leading epochs of ``trainer``'s run have eps = 0 on every batch."""
    plan, eps = trainer.plan, trainer.eps_ctl.eps
    for epoch in range(plan.epochs):
        if any(eps(epoch, b) > 0 for b in range(plan.steps_per_epoch)):
            return epoch
    return plan.epochs


class SharedPrefix(Callback):
    """Stores and reuses the states of a run's all-eps-0 epochs in ``directory`` (one file per
    (config, epoch) key, ``<key>.pt``). Single-process runs only: under DDP it does nothing."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.shared_epochs = 0  # of this run: its leading eps-0 epochs (0 when resumed or under DDP)
        self.start_weights = ""  # digest of the weights the run started from, part of every key
        self.live = True  # False after the first miss: later epochs are never reused

    def on_run_start(self, trainer):
        fresh = trainer.start_epoch == 0 and trainer.start_batch == 0  # a resumed run shares nothing
        self.shared_epochs = eps0_epochs(trainer) if fresh and not trainer.dist.active else 0
        self.start_weights = weights_digest(trainer.model.net.state_dict()) if self.shared_epochs else ""
        self.live = True

    def path(self, trainer: "Trainer", epochs: int) -> Path:
        return self.directory / f"{prefix_key(trainer.cfg, epochs, self.start_weights)}.pt"

    def reuse_epoch(self, trainer, epoch) -> Optional[TrainingState]:
        if not self.live or epoch >= self.shared_epochs:
            return None
        path = self.path(trainer, epoch + 1)
        if path.is_file():
            try:
                return TrainingState.load(path)
            except CheckpointError as exc:
                log.warning("shared prefix entry unreadable, training the epoch instead (and storing it "
                            "again): %s", exc)
                path.unlink(missing_ok=True)
        self.live = False
        return None

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.live or epoch >= self.shared_epochs:  # live: restored, not trained (the entry is there)
            return
        try:  # atomic: a reader sees no file or a whole one; a failure costs later trials only the reuse
            self.directory.mkdir(parents=True, exist_ok=True)
            trainer.capture_state(epoch + 1, 0).save(self.path(trainer, epoch + 1))
        except OSError as exc:
            log.warning("could not store the shared eps-0 epoch %d in %s (later trials will train it): %s",
                        epoch + 1, self.directory, exc)

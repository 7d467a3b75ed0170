"""In-process resume: train a config whole, and again stopped after a batch, then resumed."""
import pytest

from rftbench.training import train
from rftbench.training.callbacks import Callback


class Stop(Exception):
    pass


class StopAt(Callback):
    """Raises :class:`Stop` at the end of global batch ``step`` (1-based), after its checkpoint."""

    def __init__(self, step: int):
        self.step = step

    def on_batch_end(self, trainer, done):
        if done.step == self.step:
            raise Stop


def whole_and_resumed(cfg, tmp_path, step: int):
    """(the uninterrupted run's result, the result of one stopped after ``step`` and resumed);
    ``cfg`` must checkpoint every optimizer step (``train.checkpoint_every_steps: 1``)."""
    whole = train(cfg, run_dir=tmp_path / "whole")
    with pytest.raises(Stop):
        train(cfg, run_dir=tmp_path / "cut", callbacks=[StopAt(step)])
    return whole, train(cfg, run_dir=tmp_path / "cut", resume=True)

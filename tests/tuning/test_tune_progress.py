"""A study says when each trial starts and ends: ``trial i/N``, its state, value and the best so far."""
import io
import re

import optuna

from rftbench import progress
from rftbench.tuning import TuneOptions, tune

from test_tune_study import _cfg


def test_every_trial_gets_a_start_and_an_end_line_with_the_best_so_far(store):
    stream = io.StringIO()
    previous = progress.configure("plain", stream)
    try:
        res = tune(_cfg(), TuneOptions(storage=f"sqlite:///{store / 'optuna.db'}", study="lines", trials=2,
                                       sampler="random", pruner="none", visualize=False))
    finally:
        progress.restore(previous)
    study = optuna.load_study(study_name="lines", storage=res.storage)
    text = stream.getvalue()
    for i, t in enumerate(study.trials, start=1):
        assert f"trial {i}/2 (study trial {t.number}) started" in text
        assert f"trial {i}/2 (study trial {t.number}) COMPLETE value {t.value:.4g}" in text
    best_after = [max(t.value for t in study.trials[:k]) for k in (1, 2)]  # val ER is maximised
    shown = [float(v) for v in re.findall(r"best so far (\S+) \(trial", text)]
    assert shown == [float(f"{b:.4g}") for b in best_after]

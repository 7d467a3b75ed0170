"""rftbench's successive halving and Hyperband: Optuna's decisions where no values tie, and ties
promoted only into a rung's top 1/3 (against a direct computation of that rule); no training."""
import random

import optuna
import pytest
from optuna.trial import TrialState

from rftbench.tuning.pruners import TopKHyperbandPruner, TopKSuccessiveHalvingPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def stopped_after(pruner, curves, storage=None, direction="maximize"):
    """Run one trial per curve (values reported at steps 1, 2, ...), asking the pruner after every
    step but the last; the step each trial stopped at."""
    study = optuna.create_study(study_name="s", direction=direction, pruner=pruner, storage=storage)
    out = []
    for curve in curves:
        trial = study.ask()
        stop = len(curve)
        for step, value in enumerate(curve, 1):
            trial.report(value, step)
            if step < len(curve) and trial.should_prune():
                stop = step
                break
        if stop < len(curve):
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
        out.append(stop)
    return out


def sh():
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_without_ties_the_decisions_are_optunas(seed, direction):
    rng = random.Random(seed)
    curves = [[rng.random() for _ in range(8)] for _ in range(30)]
    assert stopped_after(TopKSuccessiveHalvingPruner(min_resource=1, reduction_factor=3), curves,
                         direction=direction) == stopped_after(sh(), curves, direction=direction)
    hb = dict(min_resource=1, max_resource=8, reduction_factor=3)
    assert stopped_after(TopKHyperbandPruner(**hb), curves, direction=direction) == \
        stopped_after(optuna.pruners.HyperbandPruner(**hb), curves, direction=direction)


def expected_first_rung(values, eta=3):
    """Successive halving's first rung decided on arrival, written out: a trial goes on when the
    trials better than it plus the already promoted trials of its value are fewer than
    max(1, n // eta), n counting the trials at the rung so far (itself included)."""
    seen, promoted, out = [], [], []
    for v in values:
        seen.append(v)
        better = sum(1 for u in seen[:-1] if u > v)
        tied = sum(1 for u, p in zip(seen[:-1], promoted) if u == v and p)
        promoted.append(better + tied < max(1, len(seen) // eta))
        out.append(promoted[-1])
    return out


@pytest.mark.parametrize("storage", [None, "sqlite"])
def test_ties_fill_the_top_third_one_slot_at_a_time(storage, tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}" if storage else None
    rng = random.Random(3)
    firsts = [0.5 if rng.random() < 0.6 else rng.choice([0.25, 0.75, 0.5]) for _ in range(24)]
    curves = [[v, v] for v in firsts]  # two steps: the first rung decides
    ours = stopped_after(TopKSuccessiveHalvingPruner(min_resource=1, reduction_factor=3), curves, url)
    assert [s == 2 for s in ours] == expected_first_rung(firsts)
    assert stopped_after(sh(), [[0.5, 0.5]] * 12) == [2] * 12  # Optuna promotes every tied trial
    tied = stopped_after(TopKSuccessiveHalvingPruner(min_resource=1, reduction_factor=3), [[0.5, 0.5]] * 12)
    assert [i for i, s in enumerate(tied) if s == 2] == [0, 5, 8, 11]  # a third of them


def test_hyperband_brackets_use_the_top_k_rule():
    pruner = TopKHyperbandPruner(min_resource=1, max_resource=8, reduction_factor=3)
    stops = stopped_after(pruner, [[0.5] * 8] * 30)
    assert pruner._pruners and all(isinstance(p, TopKSuccessiveHalvingPruner) for p in pruner._pruners)
    assert stops.count(8) < stopped_after(optuna.pruners.HyperbandPruner(min_resource=1, max_resource=8,
                                                                         reduction_factor=3), [[0.5] * 8] * 30).count(8)
    assert stops.count(8) <= 30 // 3

"""Optuna's successive halving and Hyperband pruners, promoting ties only into the top 1/eta.

Optuna decides when a trial reaches a rung: it promotes it when fewer than k trials at the rung
have a better value (k = max(1, n // eta) of the n trials there so far), so every trial *tied*
at the cut goes on. Successive halving and ASHA as published promote the top k (ties in any
order). The difference matters on a schedule search: trials whose schedules are still at eps = 0
train the same model bit for bit (:mod:`rftbench.training.prefix`), so after the first epochs
most of a study ties at one value, and Optuna promotes all of them.

:class:`TopKSuccessiveHalvingPruner` asks Optuna's pruner first (which records the rungs the
trial completed) and then, at each rung completed at this step, counts the tied trials too:
it promotes the trial when the trials better than it plus the trials with its value that were
already promoted from that rung number fewer than k. Ties thus fill the top k as the rung grows,
one slot at a time, in the order they arrive, and a rung promotes 1/eta of its trials. Without
ties it decides exactly as Optuna's pruner (tested). :class:`TopKHyperbandPruner` is Optuna's
Hyperband with this pruner in every bracket.
"""
from __future__ import annotations

import optuna
from optuna.pruners import HyperbandPruner, SuccessiveHalvingPruner
# Optuna's own rung bookkeeping (the system attribute per completed rung), version pinned in constraints.txt
from optuna.pruners._successive_halving import _completed_rung_key, _get_current_rung
from optuna.study import StudyDirection


def _promoted_key(rung: int) -> str:
    return f"rftbench:promoted_rung_{rung}"


def promotable(better: int, tied_promoted: int, n_at_rung: int, reduction_factor: int) -> bool:
    """Whether a trial with ``better`` trials ahead of it and ``tied_promoted`` trials of its value
    already promoted, among ``n_at_rung`` at the rung (itself included), is in the top k =
    max(1, n // eta)."""
    return better + tied_promoted < max(1, n_at_rung // reduction_factor)


class TopKSuccessiveHalvingPruner(SuccessiveHalvingPruner):
    """:class:`optuna.pruners.SuccessiveHalvingPruner` that promotes ties only into the top
    1/eta at each rung (the module docstring says how and why); same arguments."""

    def prune(self, study: "optuna.study.Study", trial: "optuna.trial.FrozenTrial") -> bool:
        first_new = _get_current_rung(trial)  # read before Optuna records this step's rungs
        if super().prune(study, trial):
            return True
        trials = study.get_trials(deepcopy=False)
        me = next((t for t in trials if t.number == trial.number), None)
        if me is None:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        for rung in range(first_new, _get_current_rung(me)):
            key = _completed_rung_key(rung)
            value = me.system_attrs[key]
            others = [t for t in trials if key in t.system_attrs and t.number != me.number]
            better = sum(1 for t in others if sign * t.system_attrs[key] > sign * value)
            tied = sum(1 for t in others if t.system_attrs[key] == value and _promoted_key(rung) in t.system_attrs)
            if not promotable(better, tied, len(others) + 1, self._reduction_factor):
                return True
            study._storage.set_trial_system_attr(trial._trial_id, _promoted_key(rung), True)
        return False


class TopKHyperbandPruner(HyperbandPruner):
    """:class:`optuna.pruners.HyperbandPruner` whose brackets are
    :class:`TopKSuccessiveHalvingPruner` s (same arguments, same brackets and trial allocation)."""

    def _try_initialization(self, study: "optuna.study.Study") -> None:
        super()._try_initialization(study)
        self._pruners = [TopKSuccessiveHalvingPruner(min_resource=p._min_resource, reduction_factor=p._reduction_factor,
                                                     min_early_stopping_rate=p._min_early_stopping_rate,
                                                     bootstrap_count=p._bootstrap_count)
                         for p in self._pruners]

"""What a study optimises: names for ``--objectives``, each read from a trial's training run.

Validation metrics are the trainer's per-epoch ``val/*`` metrics of the last epoch (the same
numbers reported to the pruner every epoch); ``train_compute`` counts forward-backward passes
(one per batch plus one per attack step), the cost an eps schedule saves while eps = 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TuneError


@dataclass(frozen=True)
class StudyObjective:
    name: str
    direction: str  # "maximize" | "minimize"
    metric: str | None  # the per-epoch metric reported to pruners (None: not per epoch)
    help: str


OBJECTIVES: dict[str, StudyObjective] = {o.name: o for o in (
    StudyObjective("val_er", "maximize", "val/expected_robustness", "expected robustness on the validation subset"),
    StudyObjective("val_clean", "maximize", "val/acc_clean", "clean accuracy on the validation subset"),
    StudyObjective("val_pgd", "maximize", "val/acc_pgd", "accuracy under the sweep attack at the target eps (val)"),
    StudyObjective("train_compute", "minimize", None,
                   "forward-backward passes in training: batches + batches x attack steps"),
)}


def parse_objectives(text: str | list[str] | None) -> list[StudyObjective]:
    names = text.split(",") if isinstance(text, str) else list(text or ["val_er"])
    names = [n.strip() for n in names if n.strip()] or ["val_er"]
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise TuneError(f"objective(s) {', '.join(unknown)} are not recorded by a trial; choose from "
                        + "; ".join(f"{o.name} ({o.help})" for o in OBJECTIVES.values()) + ".")
    if len(set(names)) != len(names):
        raise TuneError(f"--objectives names one objective twice: {','.join(names)}.")
    return [OBJECTIVES[n] for n in names]


def objective_values(objectives: list[StudyObjective], history: list[dict[str, float]], attack_steps: int,
                     total_steps: int, steps_per_attack: int) -> list[float]:
    """The trial's values, from the training history (last epoch with validation) and its counts."""
    last_val: dict[str, Any] = next((h for h in reversed(history) if "val/expected_robustness" in h), {})
    out = []
    for o in objectives:
        if o.metric is None:
            out.append(float(total_steps + attack_steps * steps_per_attack))
        elif o.metric in last_val:
            out.append(float(last_val[o.metric]))
        else:
            raise TuneError(f"objective {o.name!r}: the trial recorded no {o.metric}; keep validation on "
                            f"(train.val_every) to tune on it.")
    return out

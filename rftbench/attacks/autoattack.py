"""AutoAttack at the target eps: pyautoattack (the reference), run one attack at a time for a
per-attack breakdown, and torchattacks' AutoAttack as a second opinion.

eps is in [0,1] pixel units (the L2 radius in the same units for L2). Images are (N,C,H,W)
floats in [0,1]; labels are int64 (N,).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torchattacks
from torch import nn

from ..errors import ConfigError
from .norms import EvalNorm as Norm
from .startable import predict

CLEAN_WRONG = 1  # code in ``broken_by``: misclassified without attack; 0 = robust; 2 + k = attack k
PYAUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
TORCHATTACKS_VERSIONS = ("standard", "plus", "rand")


def build_pyautoattack(model: nn.Module, *, eps: float, norm: Norm, version: str, num_classes: int,
                       device: torch.device | str, seed: int = 0, attacks: list[str] | None = None):
    """A pyautoattack ``AutoAttack`` configured for ``num_classes`` classes.

    With fewer than 10 classes, pyautoattack's ``standard`` version crashes in APGD-T and FAB-T
    as soon as a sample survives the untargeted attacks; the number of target classes is capped
    at ``num_classes - 1`` (and recorded by the caller). ``norm`` may be Linf, L2 or L1
    (pyautoattack's own L1 attacks; its standard L1 version targets 5 classes and restarts
    APGD-CE 5 times with growing radii).
    """
    from pyautoattack import AutoAttack

    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    kwargs = dict(norm=norm, eps=eps, version=version, device=device, seed=seed)
    if version == "custom":
        if not attacks:
            raise ConfigError("autoattack.version 'custom' needs autoattack.attacks, e.g. [apgd-ce, apgd-t].")
        kwargs["attacks"] = list(attacks)
    aa = AutoAttack(model, **kwargs)
    # at most the version's own count (9; standard L1: 5) and at most the classes there are to target
    aa.apgd_targeted.n_target_classes = max(1, min(aa.apgd_targeted.n_target_classes, num_classes - 1))
    aa.fab.n_target_classes = max(1, min(aa.fab.n_target_classes, num_classes - 1))
    return aa


def check_autoattack_config(version: str, attacks: Sequence[str], running: bool, second_opinion: bool = False) -> None:
    """Fail on AutoAttack settings that cannot run, before any work (ConfigError)."""
    if running and version == "custom" and not attacks:
        raise ConfigError("eval.autoattack.version 'custom' needs eval.autoattack.attacks, e.g. [apgd-ce, apgd-t].")
    if version != "custom" and attacks:
        raise ConfigError(f"eval.autoattack.attacks is used only with version 'custom'; version {version!r} runs "
                          f"its own list. Remove attacks or set version: custom.")
    unknown = [a for a in attacks if a not in PYAUTOATTACK_ATTACKS]
    if unknown:
        raise ConfigError(f"eval.autoattack.attacks: unknown attack(s) {unknown}; pyautoattack knows "
                          f"{', '.join(PYAUTOATTACK_ATTACKS)}.")
    if running and second_opinion and version not in TORCHATTACKS_VERSIONS:
        raise ConfigError("eval.autoattack.second_opinion (torchattacks' AutoAttack) needs version standard, "
                          "plus or rand.")


class _CaptureLog(logging.Handler):
    """Collects pyautoattack's own warnings (randomized / dynamic defence, probabilities as output...)."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.messages:
            self.messages.append(msg)


@dataclass
class AutoAttackResult:
    """Per-sample outcome of AutoAttack: ``broken_by`` (uint8, N): 0 robust, 1 misclassified
    clean, 2 + k broken by ``attacks[k]`` (the first attack in order that broke it)."""

    attacks: list[str]
    broken_by: np.ndarray
    n_target_classes: int
    library_warnings: list[str] = field(default_factory=list)


# progress hook of AutoAttack on one chunk: (attack k, number of attacks, its name, samples left robust after it)
AttackHook = Callable[[int, int, str, int], None]


def _attack_one_by_one(aa, order: list[str], x: torch.Tensor, y: torch.Tensor, alive: torch.Tensor,
                       broken_by: np.ndarray, batch_size: int, on_attack: Optional[AttackHook] = None) -> None:
    """Each attack of ``order`` on the survivors of the previous ones (updates alive, broken_by);
    ``on_attack`` after each (also those skipped once none survives)."""
    for k, name in enumerate(order):
        pos = alive.nonzero().flatten()
        if len(pos) > 0:
            aa.attacks_to_run = [name]
            _, y_adv = aa.run_standard_evaluation(x[pos], y[pos], batch_size=batch_size)
            broke = (y_adv.to(y.device) != y[pos])
            alive[pos[broke]] = False
            broken_by[pos[broke].cpu().numpy()] = 2 + k
        if on_attack is not None:
            on_attack(k, len(order), name, int(alive.sum()))


def run_pyautoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm, version: str,
                     num_classes: int, seed: int, batch_size: int, attacks: list[str] | None = None,
                     device: torch.device | str = "cpu", on_attack: Optional[AttackHook] = None) -> AutoAttackResult:
    """pyautoattack on one chunk (N <= ``batch_size`` samples), one attack at a time;
    ``on_attack(k, n_attacks, name, n_left)`` after attack k with the samples still robust (progress
    display; the results do not depend on it).

    Each attack of the version's list runs through ``run_standard_evaluation`` on the survivors
    of the previous ones, with the settings the version sets: with N <= batch_size this is
    exactly what one ``run_standard_evaluation`` call on the chunk computes (the same batches,
    the same seeds), plus which attack broke each sample.
    """
    if len(x) > batch_size:
        raise ValueError(f"a chunk holds at most batch_size={batch_size} samples, got {len(x)}.")
    aa = build_pyautoattack(model, eps=eps, norm=norm, version=version, num_classes=num_classes, device=device,
                            seed=seed, attacks=attacks)
    order = list(aa.attacks_to_run)
    broken_by = np.zeros(len(y), dtype=np.uint8)
    alive = predict(model, x) == y
    broken_by[~alive.cpu().numpy()] = CLEAN_WRONG
    log = logging.getLogger("auto-attack")
    capture = _CaptureLog()
    log.addHandler(capture)
    try:
        _attack_one_by_one(aa, order, x, y, alive, broken_by, batch_size, on_attack)
    finally:
        log.removeHandler(capture)
        aa.attacks_to_run = order
    return AutoAttackResult(order, broken_by, int(aa.apgd_targeted.n_target_classes), capture.messages)


def run_torchattacks_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm,
                                version: str, num_classes: int, seed: int) -> np.ndarray:
    """torchattacks' AutoAttack (a second opinion beside pyautoattack): robust flags (bool, N)."""
    if version not in TORCHATTACKS_VERSIONS:
        raise ConfigError(f"torchattacks' AutoAttack has no version {version!r}; the second opinion needs "
                          f"autoattack.version standard, plus or rand.")
    atk = torchattacks.AutoAttack(model, norm=norm, eps=eps, version=version, n_classes=num_classes, seed=seed)
    adv = atk(x, y)
    return (predict(model, adv) == y).cpu().numpy()

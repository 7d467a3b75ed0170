"""``eval.threats``: the threats a record evaluates on the same subset beside the training threat
(``cfg.threat``): norm threats (Linf, L2, L1 at their own target radius, eps grid, sweep attack
and AutoAttack settings) and common corruptions.

:func:`resolve_threats` checks the list before any work (attacks that cannot run, unknown
corruption names, an L1 or L2 radius that looks like a Linf one) and lays out what each
threat measures; :func:`measure_block` measures one block of the subset per threat. A norm
threat whose resolved settings are the training threat's is not measured twice: its numbers
are the record's own (``primary``). eps in [0,1] pixel units of each threat's norm.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..attacks.autoattack import check_autoattack_config
from ..attacks.sweep import SWEEP_ATTACKS, SweepSettings
from ..config import CorruptionThreatConfig, ExperimentConfig, NormThreatConfig
from .corruptions import corruption_names, library_version
from .settings import measurement_settings

CORRUPTION_KEY = "corruptions"
LOOKS_LINF_EPS = 16 / 255  # an L1/L2 radius this small may have been meant as a Linf one...
TINY_PER_PIXEL = 0.5 / 255  # ...when its per-pixel meaning is below half a grey level


@dataclass
class NormThreat:
    """One norm threat as measured: target ``eps``, ``grid``, sweep attack, AutoAttack on
    subset positions [0, n_aa) (``aa_run``), its record ``settings``; ``primary``: the same
    measurement as the training threat's (not repeated)."""

    key: str
    norm: str
    eps: float
    grid: list[float]
    sweep: SweepSettings
    aa_run: bool
    n_aa: int
    settings: dict[str, Any]
    primary: bool = False


@dataclass
class CorruptionThreat:
    """Every ``names`` x ``severities`` corruption of each subset image (seeded from ``seed``)."""

    names: list[str]
    severities: list[int]
    seed: int
    key: str = CORRUPTION_KEY

    @property
    def pairs(self) -> list[tuple[str, int]]:
        """(corruption, severity) in column order of the per-sample flags."""
        return [(n, s) for n in self.names for s in self.severities]

    def settings(self) -> dict[str, Any]:
        return {"corruptions": list(self.names), "severities": list(self.severities), "library": library_version(),
                "seeds": "per (seed, dataset index, corruption, severity)", "seed": self.seed,
                "images": "rounded to uint8; grayscale repeated to 3 channels and averaged back; sides below 32 px "
                          "upscaled by an integer factor (nearest) and averaged back over its blocks"}


def _grid(t: NormThreatConfig, default_points: int) -> list[float]:
    if t.eps_grid is not None:
        return sorted(set(float(e) for e in t.eps_grid) | {0.0})
    n = t.num_points or default_points
    return [t.eps * i / (n - 1) for i in range(n)]


def _sweep(cfg: ExperimentConfig, t: NormThreatConfig) -> SweepSettings:
    """The threat's sweep attack: its own keys, else ``eval``'s (L1: ``apgd-ce`` unless set)."""
    ec = cfg.eval
    attack = t.sweep_attack or ("apgd-ce" if t.norm == "L1" else ec.sweep_attack)
    names = attack if isinstance(attack, list) else [attack]
    adaptive = all(SWEEP_ATTACKS.get(n).adapts_step for n in names)
    return SweepSettings(attack=tuple(attack) if isinstance(attack, list) else attack, norm=t.norm,
                         steps=t.sweep_steps or ec.sweep_steps, step_ratio=None if adaptive else ec.step_size_ratio,
                         restarts=t.restarts or ec.restarts, random_start=ec.random_start, seed=cfg.seed)


def radius_warning(norm: str, eps: float, sample_shape: Sequence[int]) -> Optional[str]:
    """A warning when an L1/L2 ``eps`` looks like a Linf radius (small, and under half a grey
    level per pixel when spread evenly over the C*H*W values), stating its per-pixel meaning."""
    d = int(np.prod(sample_shape))
    if norm == "Linf" or eps > LOOKS_LINF_EPS:
        return None
    per_pixel = eps / math.sqrt(d) if norm == "L2" else eps / d
    if per_pixel >= TINY_PER_PIXEL:
        return None
    return (f"eval.threats {norm} eps {eps:.4g} looks like a Linf radius: on {d} values "
            f"({'x'.join(map(str, sample_shape))}) it allows a change of {per_pixel * 255:.3g}/255 per value when "
            f"spread evenly ({norm} bounds the {'Euclidean norm' if norm == 'L2' else 'sum of absolute values'} of "
            f"the whole perturbation); write the radius in {norm} units (e.g. L2 0.5-2, L1 10-75 at 224 px).")


def _norm_threat(cfg: ExperimentConfig, t: NormThreatConfig, sample_shape: Sequence[int], n_total: int,
                 run_aa: bool, primary_settings: dict[str, Any]) -> NormThreat:
    ec = cfg.eval
    aa = t.autoattack or ec.autoattack
    sweep, grid = _sweep(cfg, t), _grid(t, ec.num_points)
    aa_run = run_aa and aa.enabled
    check_autoattack_config(aa.version, aa.attacks, running=aa_run, second_opinion=False)
    n_aa = min(aa.n_samples, n_total) if aa_run else 0
    st = measurement_settings(grid=grid, distribution=ec.distribution, sweep=sweep,
                              batch_size=cfg.data.eval_batch_size, norm=t.norm, eps=t.eps,
                              aa=aa if aa_run else None, n_aa=n_aa, seed=cfg.seed, checks=ec.checks,
                              sample_shape=sample_shape)
    primary = t.norm == cfg.threat.norm and t.eps == cfg.threat.eps and st == primary_settings
    return NormThreat(t.key(), t.norm, t.eps, grid, sweep, aa_run, n_aa, st, primary)


def resolve_threats(cfg: ExperimentConfig, sample_shape: Sequence[int], n_total: int, run_aa: bool,
                    primary_settings: dict[str, Any]) -> tuple[list, list[str]]:
    """The threats of ``cfg.eval.threats`` laid out (:class:`NormThreat`, :class:`CorruptionThreat`)
    and the warnings about them (also issued with :func:`warnings.warn`); ConfigError first for
    anything that cannot run. ``run_aa``: AutoAttack runs at all in this evaluation."""
    out: list = []
    notes: list[str] = []
    for t in cfg.eval.threats or []:
        if isinstance(t, CorruptionThreatConfig):
            out.append(CorruptionThreat(corruption_names(t.corruptions), list(t.severities), cfg.seed))
            continue
        note = radius_warning(t.norm, t.eps, sample_shape)
        if note:
            warnings.warn(note, UserWarning, stacklevel=2)
            notes.append(note)
        out.append(_norm_threat(cfg, t, sample_shape, n_total, run_aa, primary_settings))
    return _with_training_threat(cfg, out, primary_settings), notes


def _with_training_threat(cfg: ExperimentConfig, threats: list, primary_settings: dict[str, Any]) -> list:
    """The training threat is evaluated on the same subset anyway: where no listed threat has its
    key (norm and eps), it joins the list first, as ``primary`` (its numbers are the record's own)."""
    key = NormThreatConfig(norm=cfg.threat.norm, eps=cfg.threat.eps).key()
    if any(isinstance(t, NormThreat) and t.key == key for t in threats) or not primary_settings:
        return threats
    sweep = SweepSettings.from_dict(primary_settings["sweep"])
    first = NormThreat(key, cfg.threat.norm, cfg.threat.eps, list(primary_settings["eps_grid"]), sweep,
                       primary_settings["autoattack"] is not None,
                       (primary_settings["autoattack"] or {}).get("n_samples_designated", 0), primary_settings, True)
    return [first, *threats]


def threats_settings(threats: list, notes: list[str]) -> dict[str, Any]:
    """What the record's ``settings.threats`` states (shards and resumes must agree on it)."""
    return {"list": [{"key": t.key, "norm": t.norm, "eps": t.eps, "primary": t.primary, **t.settings}
                     if isinstance(t, NormThreat)
                     else {"key": t.key, **t.settings()} for t in threats], "warnings": list(notes)}


def aa_chunk_sizes(cfg: ExperimentConfig) -> list[int]:
    """AutoAttack chunk sizes of the norm threats (shard blocks are multiples of each)."""
    return [(t.autoattack or cfg.eval.autoattack).batch_size for t in cfg.eval.threats or []
            if isinstance(t, NormThreatConfig)]


def model_classes(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])

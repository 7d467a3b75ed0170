"""The norms of a threat model: ``Linf`` (eps is a per-pixel bound), ``L2`` (eps is the
radius of the perturbation's Euclidean norm over all C*H*W values) and, for evaluation only,
``L1`` (eps bounds the sum of the perturbation's absolute values over all C*H*W values). All
in [0,1] pixel units."""
from __future__ import annotations

from typing import Literal

Norm = Literal["Linf", "L2"]
NORMS: tuple[str, ...] = ("Linf", "L2")
EvalNorm = Literal["Linf", "L2", "L1"]
EVAL_NORMS: tuple[str, ...] = ("Linf", "L2", "L1")  # training attacks take NORMS only

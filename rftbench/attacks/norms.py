"""The norms of a threat model: ``Linf`` (eps is a per-pixel bound) and ``L2`` (eps is the
radius of the perturbation's Euclidean norm over all C*H*W values). Both in [0,1] pixel units."""
from __future__ import annotations

from typing import Literal

Norm = Literal["Linf", "L2"]
NORMS: tuple[str, ...] = ("Linf", "L2")

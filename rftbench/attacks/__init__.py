"""Attacks: training attacks (:mod:`.train`, registry :data:`ATTACKS`), eps-sweep attacks
(:mod:`.sweep`, registry :data:`SWEEP_ATTACKS`; pruned and naive sweeps in :mod:`.pruned`) and
AutoAttack (:mod:`.autoattack`). Every eps is in [0,1] pixel units (L2: the radius in the same
units); images are (N, C, H, W) in [0, 1].
"""
from .norms import NORMS, Norm
from .sweep import SWEEP_ATTACKS, SweepAttack, SweepSettings
from .train import ATTACKS, BN_MODES, TrainAttack

__all__ = ["ATTACKS", "BN_MODES", "NORMS", "Norm", "SWEEP_ATTACKS", "SweepAttack", "SweepSettings", "TrainAttack"]

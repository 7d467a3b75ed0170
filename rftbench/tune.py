"""Kept for imports of the first layout: the tuning code lives in :mod:`rftbench.tuning`."""
from .tuning import (OBJECTIVES, PRUNERS, SAMPLERS, TuneOptions, TuneResult, default_storage, open_storage,
                     run_tune_worker, summarize, tune)

__all__ = ["OBJECTIVES", "PRUNERS", "SAMPLERS", "TuneOptions", "TuneResult", "default_storage", "open_storage",
           "run_tune_worker", "summarize", "tune"]

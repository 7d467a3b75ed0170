"""A compact per-sample summary of an evaluation record, small enough for one MLflow tag.

The leaderboard bootstraps confidence intervals from per-sample results. Downloading the
evaluation record of every run costs one artifact read per run; instead each evaluated run
carries the tag ``rftbench.per_sample``: the bit-packed sweep flags (``n`` x grid, column 0 =
clean), the bit-packed AutoAttack flags (robust = 1) of the AutoAttack prefix, and the ER weights
of the grid (per-sample ER = flags @ weights, whose mean is the record's ER because ER is linear
in the curve). A summary longer than MLflow's tag limit is not set; the leaderboard then reads
the record artifact (and caches it on disk).
"""
from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import expected_robustness

TAG = "rftbench.per_sample"
MAX_TAG = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH


@dataclass
class SampleSummary:
    sweep: np.ndarray        # bool (n, G): column 0 = clean, last = the grid's last eps
    aa: np.ndarray | None    # bool (n_aa,): robust under AutoAttack; None without AutoAttack
    er_weights: np.ndarray   # float (G,): per-sample ER = sweep @ er_weights

    @property
    def clean(self) -> np.ndarray:
        return self.sweep[:, 0].astype(float)

    @property
    def pgd(self) -> np.ndarray:
        return self.sweep[:, -1].astype(float)

    @property
    def er(self) -> np.ndarray:
        return self.sweep.astype(float) @ self.er_weights


def er_weights(grid: list[float], distribution: str) -> np.ndarray:
    """ER as a weighted sum of the curve's points (ER is linear in the accuracies)."""
    g = len(grid)
    return np.array([expected_robustness(grid, np.eye(g)[k], distribution) for k in range(g)])


def summary_of_record(record: Any) -> SampleSummary:
    """The summary of an :class:`rftbench.evaluation.records.EvaluationRecord`."""
    s = record.samples()
    er = record["expected_robustness"]
    aa = (s.aa_broken_by == 0) if record["autoattack"] else None
    return SampleSummary(np.asarray(s.sweep_flags, bool), aa, er_weights(er["grid"], er["distribution"]))


def _bits(a: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.packbits(a.astype(bool), axis=None).tobytes(), 9)).decode()


def _unbits(s: str, shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(s)), dtype=np.uint8)
    return np.unpackbits(raw)[: int(np.prod(shape))].reshape(shape).astype(bool)


def encode(summary: SampleSummary) -> str:
    d = {"v": 1, "shape": list(summary.sweep.shape), "sweep": _bits(summary.sweep),
         "w": [float(x) for x in summary.er_weights],
         "n_aa": None if summary.aa is None else int(len(summary.aa)),
         "aa": None if summary.aa is None else _bits(summary.aa)}
    return json.dumps(d, separators=(",", ":"))


def decode(text: str) -> SampleSummary:
    d = json.loads(text)
    sweep = _unbits(d["sweep"], tuple(d["shape"]))
    aa = None if d["aa"] is None else _unbits(d["aa"], (d["n_aa"],))
    return SampleSummary(sweep, aa, np.asarray(d["w"], float))


def summary_tag(record: Any) -> dict[str, str]:
    """``{TAG: encoded}`` when it fits in an MLflow tag, else ``{}``."""
    text = encode(summary_of_record(record))
    return {TAG: text} if len(text) <= MAX_TAG else {}

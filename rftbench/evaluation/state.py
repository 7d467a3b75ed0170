"""Interruptible, resumable evaluation: the per-block state file.

An evaluation runs in blocks of whole batches and AutoAttack chunks (see
:func:`rftbench.evaluation.evaluate.shard_block`), so a block's per-sample results are those of an
uninterrupted evaluation. After every block the finished blocks are written (atomically) to a
JSON state file; SIGTERM / SIGINT ask the evaluation to stop at the next block boundary
(:class:`rftbench.signals.StopRequest`; then :class:`EvaluationInterrupted`, a
``KeyboardInterrupt``: the MLflow run ends KILLED and the CLI exits 130). Evaluating again with the same state file continues after the saved blocks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import RecordError

STATE_FORMAT = 1


class EvaluationInterrupted(KeyboardInterrupt):
    """The evaluation stopped at a block boundary after a signal, its finished blocks saved."""


def write_state(path: Path, fingerprint: dict[str, Any], blocks: list[dict[str, Any]],
                timings: dict[str, float]) -> None:
    """Write the state (finished blocks' per-sample results) atomically (:mod:`rftbench.atomic`)."""
    atomic_write_text(path, json.dumps({"rftbench_eval_state": STATE_FORMAT, "fingerprint": fingerprint,
                                        "blocks": blocks, "timings": timings}))


def read_state(path: Path, fingerprint: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The saved blocks and timings of ``path`` (none if there is no file); RecordError when the
    file belongs to another evaluation (other model, data, subset or settings)."""
    if not path.is_file():
        return [], {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RecordError(f"the evaluation state {path} is not valid JSON ({exc}); delete it to start over.") from None
    if not isinstance(data, dict) or data.get("rftbench_eval_state") != STATE_FORMAT:
        raise RecordError(f"{path} is not an rftbench evaluation state (format {STATE_FORMAT}); delete it to start "
                          f"over.")
    saved = data["fingerprint"]
    if saved != json.loads(json.dumps(fingerprint)):
        diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != json.loads(json.dumps(fingerprint.get(k))))
        raise RecordError(f"the evaluation state {path} belongs to another evaluation (it differs in {diff}); "
                          f"delete it to start over, or evaluate with the settings it was saved with.")
    return list(data["blocks"]), dict(data.get("timings", {}))

"""Interruptible, resumable evaluation: the per-block state file and the signal guard.

An evaluation runs in blocks of whole batches and AutoAttack chunks (see
:func:`rftbench.evaluate.shard_block`), so a block's per-sample results are those of an
uninterrupted evaluation. After every block the finished blocks are written (atomically) to a
JSON state file; SIGTERM / SIGINT ask the evaluation to stop at the next block boundary
(:class:`EvaluationInterrupted`, a ``KeyboardInterrupt``: the MLflow run ends KILLED and the
CLI exits 130). Evaluating again with the same state file continues after the saved blocks.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

from .errors import RecordError

STATE_FORMAT = 1


class EvaluationInterrupted(KeyboardInterrupt):
    """The evaluation stopped at a block boundary after a signal, its finished blocks saved."""


class SignalGuard:
    """While active (a context manager), SIGTERM / SIGINT set :attr:`requested` instead of
    stopping the process; a second signal interrupts at once. Installed only in the main
    thread (where Python delivers signals); the previous handlers come back on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: evaluation stopped at once")
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "SignalGuard":
        if self.enabled:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}


def write_state(path: Path, fingerprint: dict[str, Any], blocks: list[dict[str, Any]],
                timings: dict[str, float]) -> None:
    """Write the state (finished blocks' per-sample results) atomically: a temporary file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"rftbench_eval_state": STATE_FORMAT, "fingerprint": fingerprint, "blocks": blocks,
                               "timings": timings}))
    os.replace(tmp, path)


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

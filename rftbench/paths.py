"""Where rftbench keeps what it downloads or produces: the cache folder, and a lock to fill it safely.

``$RFTBENCH_CACHE`` (default ``~/.cache/rftbench``) holds the embedded pretrained checkpoint,
datasets (``data/``, unless ``$RFTBENCH_DATA`` or ``data.root`` say otherwise) and RobustBench
checkpoints (``robustbench/``, unless ``$RFTBENCH_ROBUSTBENCH_DIR``). Several processes may fill
it at once (tuning workers, a grid): :func:`file_lock` serialises them.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

try:  # POSIX; elsewhere the lock is a no-op and only the atomic rename protects the files
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def cache_dir() -> Path:
    """The rftbench cache folder (``$RFTBENCH_CACHE`` or ``~/.cache/rftbench``), created if missing."""
    root = os.environ.get("RFTBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rftbench")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) while the block runs.

    Other processes that ask for the same lock wait; the lock goes with the process if it dies,
    so a crashed writer never leaves the cache locked.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

"""Atomic file writes: a temporary file beside the target, fsync, then a rename.

A crash or a failed write leaves the previous file intact and no temporary file behind. A
full disk (ENOSPC, EDQUOT) becomes one :class:`~rftbench.errors.DiskFullError` that names the
path, the space the write needed and the space that is free.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from .errors import DiskFullError

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


def free_bytes(path: str | Path) -> Optional[int]:
    """Free space on the filesystem holding ``path`` (its nearest existing parent), if known."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full_error(path: str | Path, needed: Optional[int]) -> DiskFullError:
    """The clear error for a write of ``needed`` bytes to ``path`` that hit a full disk."""
    free = free_bytes(path)
    need = f"about {_mb(needed)}" if needed else "more space"
    have = f"{_mb(free)} free" if free is not None else "free space unknown"
    return DiskFullError(errno.ENOSPC, f"disk full while writing {path}: it needs {need} ({have} on that "
                         f"filesystem). The previous file is kept and nothing half-written is left; free space "
                         f"(or point output_dir elsewhere), then resume with `rftbench train --resume RUN_ID`.")


def is_disk_full(exc: BaseException) -> bool:
    """An ENOSPC/EDQUOT error, also when a library re-raised it as another error (torch.save's
    zip writer raises a RuntimeError from its cleanup while an ENOSPC propagates)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], *, size_hint: Optional[int] = None) -> Path:
    """Write ``path`` through ``write(f)`` on a temporary file, fsync it and rename it into place.

    On any failure the temporary file is removed and ``path`` keeps its previous content; a
    full disk raises :class:`DiskFullError` (``size_hint``: the bytes the write needs, for the message).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, max(size_hint or 0, written) or None) from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), size_hint=len(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); ignored where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

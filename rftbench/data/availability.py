"""Is a dataset on disk, can it be downloaded, is it intact? Clear errors when not.

A missing dataset fails with the layout rftbench expected and the ``download: true`` option;
``download: true`` without network fails in seconds; files that exist but fail their checksum
or cannot be parsed fail as corrupt or partial, naming the files where that is known.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DataError, OfflineError
from .core import DatasetMeta

_ROOT_HINT = "(`data.root` or $RFTBENCH_DATA sets the data root)"


def missing_paths(base: Path, required: Sequence[str]) -> list[str]:
    """The entries of ``required`` (paths relative to ``base``) that do not exist."""
    return [r for r in required if not (base / r).exists()]


def _layout(meta: DatasetMeta) -> str:
    return "\n".join("  " + line for line in meta.layout.strip("\n").splitlines())


def ensure_available(meta: DatasetMeta, root: Path, base: Path, required: Sequence[str], download: bool) -> bool:
    """Check the files ``required`` under ``base`` (inside the data ``root``).

    Returns whether a download is needed (and possible). Raises :class:`DataError` when files
    are missing and ``download`` is false or impossible, :class:`OfflineError` when the
    download host cannot be reached.
    """
    missing = missing_paths(base, required)
    if not missing:
        return False
    shown = ", ".join(str((base / m).relative_to(root)) if (base / m).is_relative_to(root) else str(base / m)
                      for m in missing[:6]) + (" ..." if len(missing) > 6 else "")
    head = (f"dataset {meta.name!r} ({meta.title}) is missing or partial under {root}: {shown} "
            f"({len(missing)} of {len(required)} expected paths absent).\nExpected layout under the data root "
            f"{_ROOT_HINT}:\n{_layout(meta)}\n")
    if not meta.download:
        raise DataError(head + f"{meta.title} cannot be downloaded automatically; get it as described above and "
                               f"put it there.")
    if not download:
        raise DataError(head + f"Put the files there, or set `data.download: true` (CLI: --set data.download=true) "
                               f"to download them from {meta.download}.")
    from ..hub import host_of, offline_flag, online

    host = host_of(meta.download)
    if not online(meta.download):
        raise OfflineError(head + f"`data.download: true` is set but {host} cannot be reached"
                                  f"{' (offline mode is set)' if offline_flag() else ''}. Download "
                                  f"{meta.download} on a machine with network and unpack it there.")
    return True


def corrupt_error(meta: DatasetMeta, root: Path, exc: BaseException, bad_files: Sequence[Path] = ()) -> DataError:
    """The error for files that exist but are corrupt or partial."""
    which = (f" These files fail their md5 checksum: {', '.join(str(p) for p in bad_files)}." if bad_files else "")
    return DataError(
        f"dataset {meta.name!r} ({meta.title}) under {root} is corrupt or partial: {type(exc).__name__}: "
        f"{exc}.{which} An interrupted download or a truncated copy leaves such files; delete them and "
        f"download again (`data.download: true`{'' if meta.download else ', where possible'}) or copy them "
        f"again.\nExpected layout:\n{_layout(meta)}")

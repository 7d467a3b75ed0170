"""Common corruptions (Hendrycks & Dietterich, 2019) through the ``imagecorruptions-imaug``
library (the maintained fork of ``imagecorruptions``: 15 benchmark corruptions + 4 extra,
severities 1-5). ``imagecorruptions`` 1.1.2 itself fails with numpy 2 / scikit-image 0.26
(``np.float_`` in fog, ``multichannel=`` in glass and gaussian blur), so the fork is pinned.

Deterministic: each (sample, corruption, severity) is corrupted under its own seed, derived
from (seed, dataset index, corruption, severity): numpy's global RNG is seeded with it (what
most corruptions draw from) and it is passed as ``seed=`` to the two that take one
(impulse noise, glass blur). The global RNG state is restored afterwards.

The library takes HxWx3 uint8 images of at least 32x32 pixels. rftbench's images are
(C,H,W) floats in [0,1]: they are rounded to uint8; a grayscale image (C=1) is repeated to
three channels and the corrupted result averaged back to one; an image smaller than 32 px is
upscaled by an integer factor k (nearest neighbour, the smallest k with k*min(H,W) >= 32),
corrupted there and averaged back over k x k blocks. The corrupted image is returned in [0,1].
"""
from __future__ import annotations

import difflib
import hashlib
import importlib.metadata
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, DataError
from ..paths import cache_dir

LIBRARY = "imagecorruptions-imaug"
SEEDED_BY_KEYWORD = ("impulse_noise", "glass_blur")  # the library's corruptions that take seed=
MIN_SIDE = 32


def _library():
    try:
        import imagecorruptions
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError(f"corruptions need the {LIBRARY} package: pip install {LIBRARY}==1.1.5") from None
    return imagecorruptions


def corruption_names(which: str | Sequence[str]) -> list[str]:
    """The corruption names of ``which`` (``all``: the 15 benchmark ones; or a list), checked
    against the library's; :class:`ConfigError` with a close match and the list otherwise."""
    lib = _library()
    if which == "all":
        return list(lib.get_corruption_names("common"))
    known = list(lib.get_corruption_names("all"))
    for name in which:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown corruption {name!r}{hint}; {LIBRARY} knows: {', '.join(known)}.")
    return list(which)


def corruption_seed(seed: int, index: int, name: str, severity: int) -> int:
    """A 32-bit seed that depends only on (seed, dataset index, corruption, severity)."""
    digest = hashlib.blake2b(struct.pack("<qqq", int(seed), int(index), int(severity)) + name.encode(),
                             digest_size=4).digest()
    return int.from_bytes(digest, "little")


def corrupt_uint8(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """The library's ``corrupt`` of one HxWx3 uint8 image under ``seed`` (uint8, HxWx3)."""
    lib = _library()
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kwargs = {"seed": seed} if name in SEEDED_BY_KEYWORD else {}
        return lib.corrupt(image, severity=severity, corruption_name=name, **kwargs)
    finally:
        np.random.set_state(state)


def _to_uint8_hwc(x: torch.Tensor) -> tuple[np.ndarray, int]:
    """(C,H,W) in [0,1] -> (H*k, W*k, 3) uint8 and the upscaling factor k."""
    a = np.rint(x.detach().cpu().numpy().astype(np.float64) * 255).astype(np.uint8).transpose(1, 2, 0)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    k = max(1, math.ceil(MIN_SIDE / min(a.shape[0], a.shape[1])))
    if k > 1:
        a = a.repeat(k, axis=0).repeat(k, axis=1)
    return a, k


def _back(out: np.ndarray, k: int, channels: int) -> torch.Tensor:
    """The corrupted uint8 image back to (C,H,W) floats in [0,1]."""
    f = out.astype(np.float32) / 255.0
    if k > 1:
        h, w = f.shape[0] // k, f.shape[1] // k
        f = f.reshape(h, k, w, k, 3).mean(axis=(1, 3))
    if channels == 1:
        f = f.mean(axis=2, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(f.transpose(2, 0, 1)))


def corrupt_batch(x: torch.Tensor, indices: Sequence[int], name: str, severity: int, seed: int) -> torch.Tensor:
    """Corrupted copies (N,C,H,W) in [0,1] of ``x`` (N,C,H,W) in [0,1] (C = 1 or 3), sample i
    under :func:`corruption_seed` of its dataset index ``indices[i]``."""
    check_unit_range(x)
    if x.shape[1] not in (1, 3):
        raise DataError(f"corruptions need images with 1 or 3 channels, got {x.shape[1]}.")
    out = []
    for img, i in zip(x, indices):
        a, k = _to_uint8_hwc(img)
        out.append(_back(corrupt_uint8(a, name, severity, corruption_seed(seed, int(i), name, severity)), k,
                         x.shape[1]))
    return torch.stack(out).to(x.dtype) if out else x.clone()


def check_unit_range(x: torch.Tensor) -> None:
    """:class:`DataError` unless every value of ``x`` lies in [0, 1] (corruptions are defined on pixels)."""
    if not x.numel():
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(f"corruptions need images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]: the dataset "
                        f"normalises its images; move the normalisation into the model (rftbench's convention).")


def library_version() -> str:
    try:
        return f"{LIBRARY} {importlib.metadata.version(LIBRARY)}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return f"{LIBRARY} not installed"


def tensor_sha256(x: torch.Tensor) -> str:
    """sha256 of a float32 tensor's bytes (C order): the content hash of corrupted images."""
    return hashlib.sha256(np.ascontiguousarray(x.detach().cpu().numpy().astype("<f4")).tobytes()).hexdigest()


@dataclass
class CorruptionCache:
    """Corrupted copies of a block of the evaluation subset, computed once and kept in
    ``root`` (default ``$RFTBENCH_CACHE/corruptions``) under a key of the clean images' content,
    the indices, corruption, severity, seed and library version. ``hits`` / ``misses`` count
    look-ups; ``root`` None keeps nothing (every look-up computes)."""

    root: Optional[Path] = None
    hits: int = 0
    misses: int = 0

    @classmethod
    def default(cls) -> "CorruptionCache":
        return cls(cache_dir() / "corruptions")

    def _path(self, x: torch.Tensor, indices: Sequence[int], name: str, severity: int, seed: int) -> Path:
        h = hashlib.sha256(f"{library_version()}|{name}|{severity}|{seed}|{list(map(int, indices))}".encode())
        h.update(tensor_sha256(x).encode())
        return Path(self.root) / f"{name}-s{severity}-{h.hexdigest()[:32]}.npy"

    def get(self, x: torch.Tensor, indices: Sequence[int], name: str, severity: int, seed: int,
            ) -> tuple[torch.Tensor, str]:
        """The corrupted block (N,C,H,W) in [0,1] (float32) and its content hash."""
        path = None if self.root is None else self._path(x, indices, name, severity, seed)
        if path is not None and path.is_file():
            try:
                out = torch.from_numpy(np.load(path, allow_pickle=False))
                self.hits += 1
                return out, tensor_sha256(out)
            except (OSError, ValueError):  # a damaged cache file: compute it again
                pass
        self.misses += 1
        out = corrupt_batch(x.float(), indices, name, severity, seed).float()
        if path is not None:
            buf = io.BytesIO()
            np.save(buf, out.numpy(), allow_pickle=False)
            atomic_write_bytes(path, buf.getvalue())
        return out, tensor_sha256(out)

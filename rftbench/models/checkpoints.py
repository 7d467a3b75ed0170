"""Code-free checkpoints: safetensors (or a weights-only torch file) plus the architecture spec.

:func:`save_checkpoint` writes the network's state dict as safetensors with the ``arch`` JSON
in its metadata and beside it (``<path>.json``); :func:`load_checkpoint` rebuilds the model
through :func:`~rftbench.models.create_model` (never unpickles code). The ``file:<path>``
family loads such a checkpoint.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import CheckpointError, RftbenchError
from ..spec import DataSpec
from .core import MODEL_FAMILIES, PixelModel, check_model_kwargs, create_model, data_spec, name_check, spec_reader

# wrapper prefixes left by DistributedDataParallel / DataParallel and torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def save_checkpoint(model: PixelModel, path: str | Path) -> Path:
    """Save weights as safetensors and the architecture spec as ``<path>.json`` beside it."""
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    atomic_write_bytes(path, save(state, metadata={"arch": json.dumps(model.arch)}))
    atomic_write_text(Path(str(path) + ".json"), json.dumps(model.arch, indent=2))
    return path


@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Force ``torch.load(weights_only=True)`` inside libraries that do not pass the flag
    (torchvision's weight builders, RobustBench); torch honours the variable even over ``weights_only=False``."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def _refused_globals(exc: BaseException) -> list[str] | None:
    """The pickle globals a weights-only ``torch.load`` refused (e.g. ``posix.system``), when
    ``exc`` or an exception it was raised from is that refusal; else None."""
    names: list[str] = []
    refused = False
    while exc is not None:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only=True blocked" in text:
            refused = True
            names += [n for n in re.findall(r"GLOBAL ([A-Za-z_][\w.]*\w)", text) if n not in names]
        exc = exc.__cause__ or exc.__context__
    return names if refused else None


def unsafe_pickle_error(what: str, exc: BaseException, todo: str) -> CheckpointError | None:
    """A clear error for ``what`` (a file) when ``exc`` is a weights-only load refusing code in
    its pickle; None when ``exc`` is something else. ``todo`` says what the user can do."""
    names = _refused_globals(exc)
    if names is None:
        return None
    needs = f" (it needs {', '.join(names)})" if names else ""
    return CheckpointError(f"{what} could not be loaded safely: it is a pickle that would run code when "
                           f"loaded{needs}, so rftbench did not load it. {todo}")


def looks_like_html(path: str | Path) -> bool:
    """True when the file starts like an HTML page (a failed download saved as a checkpoint)."""
    with open(path, "rb") as f:
        head = f.read(512)
    return head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<head", b"<!--"))


def _existing_checkpoint(path: str | Path) -> Path:
    """The checkpoint's path, after checking that it exists and is not a saved HTML page."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    if looks_like_html(p):
        raise CheckpointError(f"{p} is an HTML page, not a checkpoint (a failed download, e.g. a Google Drive "
                              f"quota or virus-scan page). Delete it and download it again.")
    return p


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in _WRAPPER_PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only torch file (never runs code).

    Training checkpoints that wrap the weights (``{"state_dict": ...}`` or ``{"model": ...}``)
    are unwrapped, and DDP / torch.compile key prefixes are removed.
    """
    p = _existing_checkpoint(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p))
        else:
            # argparse.Namespace is a plain attribute holder (timm's training checkpoints carry one)
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise unsafe_pickle_error(f"checkpoint {p}", exc, "Use a checkpoint from a source you trust, saved as "
                                  "safetensors or as a plain state dict.") or CheckpointError(
            f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}. "
            f"The file is corrupt, truncated or not a weights-only checkpoint.") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} does not hold a state dict of tensors.")
    return _strip_wrappers(obj)


def read_arch(path: str | Path) -> dict:
    """The architecture spec of a checkpoint saved by :func:`save_checkpoint` (safetensors
    metadata, else ``<path>.json``), read without loading any weights."""
    p = _existing_checkpoint(path)
    arch = None
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:  # reads the header only
                meta = f.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {p}: {exc}. The file is corrupt or truncated.") from None
        if "arch" in meta:
            try:
                arch = json.loads(meta["arch"])
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"the architecture metadata of {p} is not valid JSON: {exc}.") from None
    side = Path(str(p) + ".json")
    if arch is None and side.is_file():
        try:
            arch = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"architecture spec {side} is not valid JSON: {exc}.") from None
    if arch is None:
        raise CheckpointError(f"{p} has no architecture spec (expected safetensors metadata or {side.name} "
                              f"beside it, as save_checkpoint writes).")
    return validate_arch(arch, p)


ARCH_KEYS = frozenset({"name", "num_classes", "kwargs", "spec"})


def validate_arch(arch: object, path: str | Path) -> dict:
    """``arch`` if it is an allow-listed spec: only :data:`ARCH_KEYS`; a registered model family
    other than ``file:`` (a checkpoint naming a checkpoint would recurse or open another file);
    a class count in [1, 10^6]; kwargs the family allows (never a path for the builder to open)."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"the architecture spec of {path} is not usable: {what}. Re-save the model "
                               f"with rftbench (save_checkpoint).")

    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or "num_classes" not in arch:
        raise bad(f"it needs 'name' and 'num_classes'; got {str(arch)[:200]!r}")
    extra = sorted(set(arch) - ARCH_KEYS)
    if extra:
        raise bad(f"unexpected keys {extra} (allowed: {sorted(ARCH_KEYS)})")
    family = arch["name"].split(":", 1)[0] if ":" in arch["name"] else ""
    if family == "file" or family not in MODEL_FAMILIES:
        raise bad(f"model name {arch['name']!r} is not a registered architecture "
                  f"(file: is not allowed inside a checkpoint)")
    n = arch["num_classes"]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10**6:
        raise bad(f"num_classes {n!r} is not an integer in [1, 1000000]")
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise bad(f"kwargs {kwargs!r} is not a mapping")
    try:
        check_model_kwargs(arch["name"], kwargs, where="arch kwargs")
    except RftbenchError as exc:
        raise bad(str(exc)) from None
    return arch


def checkpoint_spec(path: str | Path) -> DataSpec:
    """The input spec of the model :func:`load_checkpoint` rebuilds from ``path``, without
    reading its weights (the architecture's own family answers it)."""
    arch = read_arch(path)
    return data_spec(arch["name"], pretrained=False, kwargs=arch.get("kwargs", {}))


def load_checkpoint(path: str | Path) -> PixelModel:
    """Rebuild a model saved by :func:`save_checkpoint` (arch from the file's metadata or ``.json``)."""
    arch = read_arch(path)
    p = Path(path).expanduser()
    state = load_state_dict_file(p)
    model = create_model(arch["name"], arch["num_classes"], pretrained=False, kwargs=arch.get("kwargs", {}))
    try:
        model.net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {p} does not match its architecture {arch['name']}: {exc}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {p} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s), "
                              f"e.g. {bad[0]}: it is corrupt or came from a diverged run; use another checkpoint.")
    model.fresh_head = False
    return model


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes and bytes), in key order."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@name_check("file")
def _check_file(rest: str) -> None:
    _existing_checkpoint(rest)


@spec_reader("file")
def _file_spec(rest: str, *, pretrained: bool, weights: str | None, kwargs: dict) -> DataSpec:
    return checkpoint_spec(rest)


@MODEL_FAMILIES.register("file")
def file_model(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    """file:<path> -- a checkpoint saved by rftbench (safetensors, or a weights-only state dict
    with <path>.json beside it holding the architecture spec)."""
    model = load_checkpoint(rest)
    if num_classes and model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model

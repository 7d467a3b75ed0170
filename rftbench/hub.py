"""Offline detection for downloads from model hubs: fail in seconds with a useful message.

timm with ``pretrained=True`` and no network hangs for about 45 s before failing; rftbench
checks first and says which file to put where (or which option to use instead).
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache

from .errors import OfflineError


def hub_offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


@lru_cache(maxsize=8)
def can_reach(host: str, port: int = 443, timeout: float = 1.5) -> bool:
    """True when a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hf_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def timm_weights_cached(model_name: str) -> bool:
    """Whether timm's pretrained weights for ``model_name`` are already in the HF cache."""
    import timm
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model_name)
    except Exception:
        cfg = None
    hf_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hf_id:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(hf_id, fname)
            if isinstance(hit, str):
                return True
    except Exception:
        return False
    del timm
    return False


def require_hub_or_file(model_name: str) -> None:
    """Raise :class:`OfflineError` quickly when timm weights would need a download we cannot make."""
    if timm_weights_cached(model_name):
        return
    if hub_offline_flag() or not can_reach("huggingface.co"):
        raise OfflineError(
            f"pretrained weights for timm model {model_name!r} are not in the Hugging Face cache "
            f"({hf_cache_dir()}) and the hub cannot be reached. Either download them on a machine "
            f"with network (python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\") "
            f"and copy the cache folder to {hf_cache_dir()}, or save the weights to a file and set "
            f"`model.weights: /path/to/weights.safetensors` (or .pth) in the config."
        )

"""Offline detection for downloads (model hubs, zoos, datasets): fail in seconds with a useful message.

timm with ``pretrained=True`` and no network hangs for about 45 s before failing; rftbench
checks first (is the file cached? can the host be reached?) and says which file to put where,
or which option to use instead. ``HF_HUB_OFFLINE=1`` (or ``RFTBENCH_OFFLINE=1``) skips the
network probe and treats every host as unreachable.
"""
from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from .errors import OfflineError

_TRUE = {"1", "true", "yes", "on"}


def hub_offline_flag() -> bool:
    """True when the Hugging Face hub is declared offline (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in _TRUE


def offline_flag() -> bool:
    """True when rftbench must not try the network at all (``RFTBENCH_OFFLINE`` or ``HF_HUB_OFFLINE``)."""
    return os.environ.get("RFTBENCH_OFFLINE", "0").lower() in _TRUE or hub_offline_flag()


@lru_cache(maxsize=32)
def can_reach(host: str, port: int = 443, timeout: float = 1.5) -> bool:
    """True when a TCP connection to ``host:port`` opens within about ``timeout`` seconds.

    The probe runs in a daemon thread, so a hanging DNS lookup (which the socket timeout does
    not cover) cannot stall the caller for more than ``2 * timeout``.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name=f"rftbench-probe-{host}", daemon=True)
    thread.start()
    thread.join(2 * timeout)
    return bool(result and result[0])


def online(host_or_url: str) -> bool:
    """Whether a download from a host (or URL) can be attempted: not declared offline, and the
    host answers on the URL's port (443 for https and bare hosts, 80 for http)."""
    if offline_flag():
        return False
    parsed = urlparse(host_or_url)
    if parsed.hostname:
        return can_reach(parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443))
    return can_reach(host_or_url)


def host_of(url: str) -> str:
    return urlparse(url).hostname or url


# ---------------------------------------------------------------- Hugging Face hub (timm)
def hf_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def torch_hub_checkpoints_dir() -> Path:
    """Where torch.hub (torchvision, timm's URL weights) caches downloads: ``$TORCH_HOME/hub/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def url_cache_path(url: str) -> Path:
    """The file torch.hub saves ``url`` to."""
    return torch_hub_checkpoints_dir() / os.path.basename(urlparse(url).path)


def _timm_pretrained_cfg(model_name: str):
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(model_name)
    except Exception:
        return None


def timm_cached_file(model_name: str) -> str | None:
    """The locally cached file of timm's pretrained weights for ``model_name`` (the Hugging Face
    cache, or torch.hub's cache for weights that come from a URL), or None when none is cached."""
    cfg = _timm_pretrained_cfg(model_name)
    if cfg is None:
        return None
    hf_id = getattr(cfg, "hf_hub_id", None)
    if hf_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
            names += ["model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"]
            for fname in names:
                found = try_to_load_from_cache(hf_id, fname)
                if isinstance(found, str):
                    return found
        except Exception:
            return None
        return None
    url = getattr(cfg, "url", None)
    return str(url_cache_path(url)) if url and url_cache_path(url).is_file() else None


def timm_weights_cached(model_name: str) -> bool:
    """Whether timm's pretrained weights for ``model_name`` are already cached locally."""
    return timm_cached_file(model_name) is not None


def require_hub_or_file(model_name: str) -> None:
    """Raise :class:`OfflineError` quickly when timm weights would need a download we cannot make."""
    if timm_weights_cached(model_name):
        return
    cfg = _timm_pretrained_cfg(model_name)
    url = getattr(cfg, "url", None) if cfg is not None else None
    host = "huggingface.co" if (cfg is None or getattr(cfg, "hf_hub_id", None) or not url) else host_of(url)
    if offline_flag() or not can_reach(host):
        where = (f"the Hugging Face cache ({hf_cache_dir()})" if host == "huggingface.co"
                 else f"torch.hub's cache ({url_cache_path(url)})")
        raise OfflineError(
            f"pretrained weights for timm model {model_name!r} are not in {where} and {host} cannot be "
            f"reached{' (offline mode is set)' if offline_flag() else ''}. Either download them on a machine "
            f"with network (python -c \"import timm; timm.create_model('{model_name}', pretrained=True)\") "
            f"and copy the cache folder over (HF_HOME / TORCH_HOME say where it lives), or save the weights to "
            f"a file and set `model.weights: /path/to/weights.safetensors` (or .pth) in the config "
            f"(or `model.pretrained: false` for random initialisation)."
        )


# ---------------------------------------------------------------- plain URLs (torchvision, datasets)
def require_url_file(url: str, what: str, target: Path, alternative: str) -> None:
    """Raise :class:`OfflineError` when ``target`` (where ``url`` would be saved) is missing and
    the URL's host cannot be reached. ``alternative`` says what else the user can do."""
    if Path(target).exists():
        return
    host = host_of(url)
    if not online(url):
        raise OfflineError(
            f"{what} is not at {target} and {host} cannot be reached"
            f"{' (offline mode is set)' if offline_flag() else ''}. Download {url} on a machine with network "
            f"and put it at {target}, or {alternative}."
        )

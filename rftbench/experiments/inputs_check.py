"""Are a grid's datasets and pretrained weights on this machine? (``rftbench sweep --list``)

Checks every distinct dataset and model of a list of configs without training: a dataset is
loaded with ``download: false`` (the dataset's own availability check, which names the files
and layout it expected and how to download them); pretrained weights are looked up in the
local caches (timm / Hugging Face, torch.hub) or as the ``model.weights`` file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..config import ExperimentConfig
from ..errors import RftbenchError


def weights_problem(cfg: ExperimentConfig) -> Optional[str]:
    """None when the model's weights are local (or need none), else what is missing and how to get it."""
    from ..models.core import split_name

    m = cfg.model
    if m.weights:
        return None if Path(m.weights).expanduser().is_file() else f"weights file {m.weights} does not exist."
    family, rest = split_name(m.name)
    if not m.pretrained or family in ("builtin", "file"):
        return None  # built-ins pretrain themselves on first use (cached)
    if family == "timm":
        from ..hub import hf_cache_dir, timm_weights_cached

        if timm_weights_cached(rest):
            return None
        return (f"pretrained weights for timm:{rest} are not in the local cache ({hf_cache_dir()}); fetch them with "
                f"python -c \"import timm; timm.create_model('{rest}', pretrained=True)\" (or set model.weights).")
    if family == "torchvision":
        from ..hub import url_cache_path
        from ..models.torchvision_family import resolve_torchvision_weights

        url = resolve_torchvision_weights(rest)[1].url
        if url_cache_path(url).is_file():
            return None
        return f"torchvision weights for {rest} are not at {url_cache_path(url)}; download {url} there."
    return None  # other families check (and explain) when the run starts


def data_problem(cfg: ExperimentConfig) -> Optional[str]:
    """None when the dataset loads from local files, else the dataset's own explanation."""
    from ..data import DATASETS
    from ..task import model_spec

    try:
        DATASETS.get(cfg.data.name)(cfg.data.model_copy(update={"download": False}), model_spec(cfg), cfg.seed)
    except RftbenchError as exc:
        return str(exc)
    return None


def check_inputs(configs: list[ExperimentConfig]) -> list[dict[str, Any]]:
    """One row per distinct dataset and per distinct model: ``ok`` and, if not, ``problem``."""
    rows, seen = [], set()
    for cfg in configs:
        for kind, key, fn in (("dataset", cfg.data.name, data_problem),
                              ("weights", f"{cfg.model.name} {cfg.model.weights or ''}".strip(), weights_problem)):
            if (kind, key) in seen:
                continue
            seen.add((kind, key))
            problem = fn(cfg)
            rows.append({"kind": kind, "name": key, "ok": problem is None, "problem": problem or ""})
    return rows

"""``timm:<name>[.<pretrained tag>]``: any timm model, weights from the hub or a local file.

Input size, mean/std, interpolation and crop_pct come from timm's own pretrained data config.
A local file (``weights: path``) goes through timm's own pretrained-loading path (its checkpoint
filters, stem adaptation and head handling), fed with a state dict that rftbench read safely.
"""
from __future__ import annotations

import contextlib
import logging
import pickle
import re
from typing import Any, Iterator

from ..errors import CheckpointError, ConfigError, OfflineError
from ..spec import DataSpec
from .checkpoints import load_state_dict_file, unsafe_pickle_error, weights_only_loads
from .core import MODEL_FAMILIES, PixelModel, name_check, spec_reader

_TIMM_LOGGER = "timm.models._builder"


@name_check("timm")
def check_timm_name(rest: str) -> None:
    """Raise :class:`ConfigError` unless ``rest`` is a timm architecture (and, with a tag, a
    pretrained tag timm knows for it). Offline; lists close names."""
    import timm

    arch, _, tag = rest.partition(".")
    if not arch or not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=8, cutoff=0.75) if arch else []
        close = close or (timm.list_models(f"*{arch[:6]}*")[:8] if arch else [])
        raise ConfigError(f"timm has no model {rest!r}. Similar names: {', '.join(close) or '(none)'}; "
                          f"see `rftbench models list --timm '<pattern>'`.")
    if tag:
        known = timm.list_pretrained(f"{arch}.*")
        if rest not in known:
            raise ConfigError(f"timm model {arch!r} has no pretrained tag {tag!r}. Its tags: "
                              f"{', '.join(k.partition('.')[2] for k in known) or '(none)'}.")


class _KeyReport(logging.Handler):
    """Collects the missing / unexpected keys timm reports while loading pretrained weights."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for label, out in (("Missing keys (", self.missing), ("Unexpected keys (", self.unexpected)):
            if msg.startswith(label):
                out.extend(k.strip() for k in msg[len(label):msg.index(")")].split(","))


@contextlib.contextmanager
def _timm_key_report() -> Iterator[_KeyReport]:
    logger = logging.getLogger(_TIMM_LOGGER)
    handler = _KeyReport()
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # our handler reports; do not print timm's info lines
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def _classifier_names(pretrained_cfg: dict[str, Any]) -> list[str]:
    names = pretrained_cfg.get("classifier") or []
    return [names] if isinstance(names, str) else list(names)


def _from_file(model_name: str, num_classes: int, weights: str, kwargs: dict):
    """Create ``model_name`` with the weights of a local file through timm's loading path."""
    import timm

    state = load_state_dict_file(weights)
    cfg = timm.models.get_pretrained_cfg(model_name)
    cfg_dict = cfg.to_dict() if cfg is not None else {}
    heads = _classifier_names(cfg_dict)
    file_classes = next((int(state[f"{h}.weight"].shape[0]) for h in heads if f"{h}.weight" in state), 0)
    # timm keeps the file's head when its class count is the one asked for, else drops it
    overlay = {"state_dict": state, "num_classes": file_classes}
    try:
        with _timm_key_report() as report:
            net = timm.create_model(model_name, pretrained=True, num_classes=num_classes,
                                    pretrained_cfg_overlay=overlay, **kwargs)
    except RuntimeError as exc:
        raise CheckpointError(f"weights file {weights} does not match timm model {model_name}: {exc}") from None
    del state, overlay
    net.pretrained_cfg = {**net.pretrained_cfg, "state_dict": None, "file": str(weights)}
    head_prefixes = tuple(f"{h}." for h in heads)
    missing = [k for k in report.missing if not k.startswith(head_prefixes)]
    if missing or report.unexpected:
        raise CheckpointError(f"weights file {weights} does not match timm model {model_name}: "
                              f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, unexpected "
                              f"{report.unexpected[:5]}{' ...' if len(report.unexpected) > 5 else ''}.")
    return net


def _from_hub(model_name: str, num_classes: int, kwargs: dict):
    """Create ``model_name`` with timm's pretrained weights (the hub, or its local cache); a
    cached pickle is only ever read weights-only."""
    import timm

    from ..hub import require_hub_or_file, timm_cached_file

    require_hub_or_file(model_name)
    try:
        with weights_only_loads():  # also where an older timm would fall back to weights_only=False
            return timm.create_model(model_name, pretrained=True, num_classes=num_classes, **kwargs)
    except (OSError, ValueError) as exc:
        name = type(exc).__name__
        if re.search(r"(Connection|Timeout|LocalEntryNotFound|HfHub|HTTP)", name + str(exc)):
            raise OfflineError(f"downloading timm weights for {model_name!r} failed ({name}: {exc}). "
                               f"Set `model.weights: /path/to/file` to load them from a local file.") from None
        raise
    except (RuntimeError, pickle.UnpicklingError) as exc:
        cached = timm_cached_file(model_name) or "its cached file"
        unsafe = unsafe_pickle_error(
            f"the cached timm weights for {model_name!r} ({cached})", exc,
            f"Delete {cached} and download the weights again (python -c \"import timm; "
            f"timm.create_model('{model_name}', pretrained=True)\"), or put a trusted model.safetensors in its "
            f"place, or set `model.weights: /path/to/weights.safetensors`.")
        if unsafe is None:
            raise
        raise unsafe from None


def _spec_of_data_config(cfg: dict[str, Any]) -> DataSpec:
    return DataSpec(tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"]),
                    cfg.get("interpolation", "bicubic"), float(cfg.get("crop_pct", 1.0)))


@spec_reader("timm")
def timm_spec(rest: str, *, pretrained: bool, weights: str | None, kwargs: dict) -> DataSpec:
    """timm's pretrained data config of ``<arch>[.<tag>]``, resolved as ``timm.create_model``
    resolves it (the tag's config, else the architecture's default one)."""
    import timm
    from timm.models import resolve_pretrained_cfg, split_model_name_tag

    check_timm_name(rest)
    arch, tag = split_model_name_tag(rest)
    cfg = resolve_pretrained_cfg(arch, pretrained_cfg=tag or None).to_dict()
    return _spec_of_data_config(timm.data.resolve_data_config({}, pretrained_cfg=cfg))


@MODEL_FAMILIES.register("timm")
def timm_model(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    """timm:<name>[.<pretrained tag>] -- any timm model (e.g. timm:vit_base_patch16_224.augreg_in21k_ft_in1k);
    weights from the Hugging Face hub or a local file (model.weights); data config from timm."""
    import timm

    check_timm_name(rest)
    if weights is not None:
        net = _from_file(rest, num_classes, weights, kwargs)
    elif pretrained:
        net = _from_hub(rest, num_classes, kwargs)
    else:
        net = timm.create_model(rest, pretrained=False, num_classes=num_classes, **kwargs)
    spec = _spec_of_data_config(timm.data.resolve_model_data_config(net))
    arch = {"name": f"timm:{rest}", "num_classes": num_classes, "kwargs": kwargs, "spec": spec.to_dict()}
    model = PixelModel(net, spec, arch)
    source_classes = (getattr(net, "pretrained_cfg", None) or {}).get("num_classes")
    model.fresh_head = weights is None and (not pretrained or source_classes != num_classes)
    return model

"""The model abstraction every family builds: :class:`PixelModel` on [0,1] images.

A model name is ``<family>:<rest>`` (a bare name is a built-in). A family is:

- a factory ``factory(rest, num_classes, *, pretrained, weights, kwargs) -> PixelModel`` in
  :data:`MODEL_FAMILIES` (the only required part);
- its input spec ``reader(rest, *, pretrained, weights, kwargs) -> DataSpec`` in
  :data:`SPEC_READERS` (:func:`spec_reader`): the spec the factory would give for the same
  arguments, read from metadata (a pretrained config, a weights enum, an architecture JSON, a
  registry entry) without building the network or reading weights;
- an offline name check ``check(rest)`` in :data:`NAME_CHECKS` (:func:`name_check`).

:func:`create_model` builds a model and :func:`data_spec` answers its input spec.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..registry import Registry
from ..spec import DataSpec
from .heads import get_head, reset_head


class Normalize(nn.Module):
    """(x - mean) / std with per-channel constants kept as buffers (they follow .to(device))."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """A classifier on [0,1] images: ``net(normalize(x))``; x is (N, C, H, W), logits (N, classes).

    ``arch`` is a JSON-able spec (``{"name", "num_classes", "kwargs", "spec"}``) from which
    :func:`create_model` rebuilds the same architecture, so a state dict plus ``arch`` is a
    complete, code-free checkpoint.
    """

    def __init__(self, net: nn.Module, spec: DataSpec, arch: dict[str, Any]):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
        self.spec = spec
        self.arch = arch
        self.fresh_head = False  # True: the head was never trained (see reset_classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def num_classes(self) -> int:
        return int(self.arch["num_classes"])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head by a fresh ``num_classes``-way one (timm's
        ``reset_classifier`` where the network has it, else its last linear layer)."""
        reset_head(self.net, num_classes)
        self.arch = {**self.arch, "num_classes": num_classes}
        self.fresh_head = True  # never trained: evaluation refuses it unless asked (--allow-fresh-head)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(get_head(self.net).parameters())


# A model family turns the part of a model name after "<family>:" into a PixelModel.
ModelFactory = Callable[..., PixelModel]
MODEL_FAMILIES: Registry[ModelFactory] = Registry("model family", entry_point_group="rftbench.models")

# Optional per-family name checks that need neither network nor weights (used to validate
# configs and experiment grids before any work is done). A check raises an RftbenchError.
NAME_CHECKS: dict[str, Callable[[str], None]] = {}


def name_check(family: str) -> Callable[[Callable[[str], None]], Callable[[str], None]]:
    """Decorator: register the offline name check of ``family``."""

    def deco(fn: Callable[[str], None]) -> Callable[[str], None]:
        NAME_CHECKS[family] = fn
        return fn

    return deco


# Per-family readers of the input spec (see the module docstring); a family without one gets a
# weight-free probe build (pretrained=False) in :func:`data_spec`.
SpecReader = Callable[..., DataSpec]
SPEC_READERS: dict[str, SpecReader] = {}


def spec_reader(family: str) -> Callable[[SpecReader], SpecReader]:
    """Decorator: register how ``family`` answers its input spec without building or loading."""

    def deco(fn: SpecReader) -> SpecReader:
        SPEC_READERS[family] = fn
        return fn

    return deco


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18.a1_in1k"`` -> ``("timm", "resnet18.a1_in1k")``; bare names are built-ins."""
    family, sep, rest = name.partition(":")
    if not sep:
        return "builtin", name
    return family, rest


def check_model_name(name: str) -> None:
    """Check that ``name`` resolves (family known, architecture / tag / zoo entry exists)
    without building the model or touching the network. Raises an RftbenchError if not."""
    family, rest = split_name(name)
    MODEL_FAMILIES.get(family)  # unknown family -> the list of known ones
    check = NAME_CHECKS.get(family)
    if check is not None:
        check(rest)


# model.kwargs (and a checkpoint's arch kwargs) a family accepts: architecture knobs only, never
# file paths or pretrained-config overrides (e.g. timm's checkpoint_path, pretrained_cfg_overlay)
MODEL_KWARGS: dict[str, frozenset[str]] = {
    "builtin": frozenset({"in_chans", "width"}),
    "timm": frozenset({"drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "pos_drop_rate",
                       "global_pool", "img_size", "class_token", "qkv_bias", "qk_norm", "init_values",
                       "dynamic_img_size", "output_stride", "zero_init_last"}),
    "torchvision": frozenset({"dropout", "attention_dropout", "stochastic_depth_prob", "aux_logits",
                              "transform_input", "init_weights", "zero_init_residual", "image_size"}),
    "robustbench": frozenset(),
    "file": frozenset(),
}


def check_model_kwargs(name: str, kwargs: dict | None, *, where: str = "model.kwargs") -> None:
    """Refuse ``kwargs`` the family of ``name`` does not allow (naming the allowed ones), and
    values that are not plain numbers, strings, booleans or lists of them. Families registered
    by plugins (not in :data:`MODEL_KWARGS`) check their own."""
    family, _ = split_name(name)
    allowed = MODEL_KWARGS.get(family)
    if not kwargs or allowed is None:
        return
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise ConfigError(f"{where} {unknown} are not accepted for {family} models (allowed: {names}).")
    for k, v in kwargs.items():
        items = v if isinstance(v, (list, tuple)) else [v]
        if not all(x is None or isinstance(x, (bool, int, float, str)) for x in items):
            raise ConfigError(f"{where}.{k} must be a number, string, boolean or a list of them; got {v!r}.")


def _check_weights_file(weights: str | None) -> None:
    if weights is not None and not Path(weights).expanduser().is_file():
        raise CheckpointError(f"weights file {weights!r} does not exist; set model.weights to an existing file.")


def create_model(name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None,
                 kwargs: dict | None = None) -> PixelModel:
    """Build the model ``name`` with a ``num_classes``-way head, taking images in [0,1].

    ``pretrained``: the family's pretrained weights (hub / zoo / embedded checkpoint);
    ``weights``: a local file that replaces them (safetensors or a weights-only torch file).
    The head is replaced for ``num_classes`` whatever the weights were trained for.
    """
    family, rest = split_name(name)
    factory = MODEL_FAMILIES.get(family)
    _check_weights_file(weights)
    check_model_kwargs(name, kwargs)
    model = factory(rest, num_classes, pretrained=pretrained, weights=weights, kwargs=dict(kwargs or {}))
    if num_classes and model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def data_spec(name: str, *, pretrained: bool = True, weights: str | None = None,
              kwargs: dict | None = None) -> DataSpec:
    """The input spec that ``create_model(name, n, pretrained=..., weights=..., kwargs=...)`` gives.

    Read from the family's metadata: no network is built and no weights are read. A third-party
    family that registers no :func:`spec_reader` is built once without any weights instead.
    """
    family, rest = split_name(name)
    MODEL_FAMILIES.get(family)  # unknown family -> the list of known ones
    _check_weights_file(weights)
    check_model_kwargs(name, kwargs)
    reader = SPEC_READERS.get(family)
    if reader is None:
        return create_model(name, 2, pretrained=False, kwargs=kwargs).spec
    return reader(rest, pretrained=pretrained, weights=weights, kwargs=dict(kwargs or {}))

"""Training augmentation as named presets: ``data.augment: <preset>`` with ``data.augment_options``.

Presets (a :class:`~rftbench.registry.Registry`, so a misspelt name gets the known names and a
close match; plugins add their own through the ``rftbench.augmentations`` entry-point group):

- ``none``: the evaluation transform (resize, centre crop); nothing random.
- ``crop``: a random crop that fits the resolution: for low-resolution datasets (and the
  in-memory tensors of the embedded digits) a resize to the input size then a random crop with
  reflect padding (``padding``, default 1/8 of the side); for full-size images
  RandomResizedCrop to the input size (``scale``, default ``data.options.crop_scale``). No flips.
- ``crop_flip``: ``crop`` followed by a horizontal flip (``flip_p``, default 0.5): the paper's
  RFT recipe for the fine-grained sets (RandomResizedCrop + flip at the model's input size).
- ``randaugment``: ``crop`` (+ flips where the dataset says they keep the label) followed by
  torchvision's RandAugment (``num_ops`` 2, ``magnitude`` 9, ``num_magnitude_bins`` 31).
- ``timm``: ``timm.data.create_transform(is_training=True, ...)`` at the model's input size
  and interpolation, with ``data.augment_options`` passed through (validated against its
  signature; normalisation, the input size and random erasing are rftbench's to decide).

``data.augment: true`` is the dataset's default (:attr:`DatasetMeta.augment`), ``false`` is
``none``. Every transform returns float32 (C, H, W) in [0, 1] and never normalises (the model
does). What was resolved is recorded in ``Splits.info["augment"]``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torchvision import transforms as T

from ..config import DataConfig
from ..errors import ConfigError
from ..registry import Registry
from ..spec import DataSpec
from .transforms import ToMode, _interpolation, _mode, describe, eval_transform


@dataclass(frozen=True)
class AugmentContext:
    """What a preset needs to know: the model's input ``spec``; ``low_res`` (pad-crop instead of
    resized crops) and ``hflip`` (flips keep the label) from the dataset's meta;
    ``tensor_input``: items are float tensors already at the model's size (the embedded digits),
    not PIL images; ``crop_scale``: the dataset's RandomResizedCrop scale range."""

    spec: DataSpec
    low_res: bool = False
    hflip: bool = True
    tensor_input: bool = False
    crop_scale: tuple[float, float] = (0.08, 1.0)


@dataclass(frozen=True)
class Preset:
    """One augmentation preset: its options (name -> default) and a builder
    ``build(ctx, options) -> transform`` (``None``: leave the items as they are)."""

    name: str
    description: str
    build: Callable[[AugmentContext, dict[str, Any]], Callable | None]
    options: dict[str, Any] = field(default_factory=dict)

    def check_options(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise ConfigError(f"augmentation preset {self.name!r} has no option(s) {unknown} in "
                              f"data.augment_options; it takes {', '.join(sorted(self.options)) or 'none'}.")
        return {**self.options, **given}


AUGMENTATIONS: Registry[Preset] = Registry("augmentation preset", entry_point_group="rftbench.augmentations")


def register_preset(preset: Preset) -> Preset:
    AUGMENTATIONS.add(preset.name, preset, source=__file__)
    return preset


class FloatAsUint8:
    """Run a transform that wants uint8 images (RandAugment) on float tensors in [0, 1]."""

    def __init__(self, inner: Callable):
        self.inner = inner

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        u8 = (x * 255).round_().clamp_(0, 255).to(torch.uint8)
        return self.inner(u8).float().div_(255)

    def __repr__(self) -> str:
        return f"FloatAsUint8({self.inner!r})"


def _crop_steps(ctx: AugmentContext, opts: dict[str, Any]) -> list:
    """The random crop of ``crop``, as steps (without the PIL -> tensor conversion)."""
    _, h, w = ctx.spec.input_size
    padding = opts.get("padding")
    padding = max(1, min(h, w) // 8) if padding is None else int(padding)
    pad_crop = T.RandomCrop((h, w), padding=padding, padding_mode="reflect")
    if ctx.tensor_input:
        return [pad_crop]
    interp = _interpolation(ctx.spec)
    steps: list = [ToMode(_mode(ctx.spec))]
    if ctx.low_res:
        return steps + [T.Resize(h if h == w else (h, w), interpolation=interp), T.CenterCrop((h, w)), pad_crop]
    scale = tuple(float(v) for v in (opts.get("scale") or ctx.crop_scale))
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(f"the random crop's scale must be [low, high] with 0 < low <= high <= 1; got {scale}.")
    return steps + [T.RandomResizedCrop((h, w), scale=scale, interpolation=interp)]


def _finish(ctx: AugmentContext, steps: list) -> Callable:
    return T.Compose(steps if ctx.tensor_input else steps + [T.ToTensor()])


def _none(ctx: AugmentContext, opts: dict[str, Any]) -> Callable | None:
    return None if ctx.tensor_input else eval_transform(ctx.spec)


def _crop(ctx: AugmentContext, opts: dict[str, Any]) -> Callable:
    return _finish(ctx, _crop_steps(ctx, opts))


def _crop_flip(ctx: AugmentContext, opts: dict[str, Any]) -> Callable:
    return _finish(ctx, _crop_steps(ctx, opts) + [T.RandomHorizontalFlip(float(opts["flip_p"]))])


def _randaugment(ctx: AugmentContext, opts: dict[str, Any]) -> Callable:
    steps = _crop_steps(ctx, opts) + ([T.RandomHorizontalFlip()] if ctx.hflip else [])
    ra = T.RandAugment(num_ops=int(opts["num_ops"]), magnitude=int(opts["magnitude"]),
                       num_magnitude_bins=int(opts["num_magnitude_bins"]))
    return _finish(ctx, steps + [FloatAsUint8(ra) if ctx.tensor_input else ra])


# create_transform arguments rftbench sets itself (the input size, training mode, no normalisation
# in data) or that only shape evaluation / other pipelines; everything else may be passed.
_TIMM_FIXED = {"input_size", "is_training", "mean", "std", "normalize", "use_prefetcher", "tf_preprocessing",
               "separate", "naflex", "patch_size", "max_seq_len", "patchify", "patchify_channels_last",
               "patchify_flatten", "crop_pct", "crop_mode", "crop_border_pixels"}
_TIMM_ERASING = {"re_prob", "re_mode", "re_count", "re_num_splits"}


def timm_option_names() -> dict[str, Any]:
    """The ``create_transform`` keyword arguments ``data.augment_options`` may set, with timm's defaults."""
    from timm.data import create_transform

    params = inspect.signature(create_transform).parameters
    return {k: p.default for k, p in params.items() if k not in _TIMM_FIXED | _TIMM_ERASING}


def check_timm_options(given: dict[str, Any]) -> dict[str, Any]:
    allowed = timm_option_names()
    erasing = sorted(set(given) & _TIMM_ERASING)
    if erasing:
        raise ConfigError(f"data.augment_options {erasing}: timm applies random erasing only after normalising, "
                          f"and rftbench never normalises in the data (the model does); leave them out.")
    fixed = sorted(set(given) & _TIMM_FIXED)
    if fixed:
        raise ConfigError(f"data.augment_options {fixed}: rftbench sets these itself (from the model's input spec; "
                          f"images stay in [0, 1]); leave them out.")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"data.augment_options {unknown}: timm.data.create_transform takes no such argument; "
                          f"the options it takes here: {', '.join(sorted(allowed))}.")
    return dict(given)


def _timm(ctx: AugmentContext, opts: dict[str, Any]) -> Callable:
    from timm.data import create_transform

    opts = check_timm_options(opts)
    kwargs = {"interpolation": ctx.spec.interpolation, **opts}
    for key in ("scale", "ratio"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(float(v) for v in kwargs[key])
    try:
        tf = create_transform(input_size=tuple(ctx.spec.input_size), is_training=True, normalize=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"timm.data.create_transform refused data.augment_options {opts}: "
                          f"{type(exc).__name__}: {exc}") from None
    head = [T.ToPILImage()] if ctx.tensor_input else []
    return T.Compose(head + [ToMode(_mode(ctx.spec)), tf, T.ConvertImageDtype(torch.float32)])


class _TimmPreset(Preset):
    def check_options(self, given: dict[str, Any]) -> dict[str, Any]:
        return check_timm_options(given)


register_preset(Preset("none", "the evaluation transform: resize and centre crop, nothing random", _none))
_CROP_OPTIONS = {"padding": None, "scale": None}
register_preset(Preset("crop", "random crop (pad-and-crop at low resolution, RandomResizedCrop otherwise), no flips",
                       _crop, dict(_CROP_OPTIONS)))
register_preset(Preset("crop_flip", "crop + horizontal flip (the paper's recipe for fine-grained sets)", _crop_flip,
                       {**_CROP_OPTIONS, "flip_p": 0.5}))
register_preset(Preset("randaugment", "crop (+ flips where they keep the label) + torchvision RandAugment",
                       _randaugment, {**_CROP_OPTIONS, "num_ops": 2, "magnitude": 9, "num_magnitude_bins": 31}))
register_preset(_TimmPreset("timm", "timm.data.create_transform(is_training=True, **data.augment_options)", _timm))


def resolve_augment(cfg: DataConfig, default: str) -> tuple[Preset, dict[str, Any]]:
    """The preset ``cfg.augment`` names (``true``: ``default``, the dataset's; ``false``: ``none``)
    and its checked options; unknown names get the registry's did-you-mean error."""
    name = default if cfg.augment is True else "none" if cfg.augment is False else str(cfg.augment)
    preset = AUGMENTATIONS.get(name)
    if cfg.augment is False and cfg.augment_options:
        raise ConfigError(f"data.augment is false but data.augment_options {sorted(cfg.augment_options)} are set; "
                          f"name a preset (e.g. data.augment: crop) or drop the options.")
    return preset, preset.check_options(dict(cfg.augment_options))


def build_augment(cfg: DataConfig, ctx: AugmentContext, default: str) -> tuple[Callable | None, dict[str, Any]]:
    """The training transform for ``cfg.augment`` in ``ctx``, and its record for ``Splits.info``."""
    preset, opts = resolve_augment(cfg, default)
    tf = preset.build(ctx, opts)
    info = {"requested": cfg.augment, "preset": preset.name, "dataset_default": default, "options": opts,
            "input": "tensor" if ctx.tensor_input else "PIL image",
            "transform": describe(tf) if tf is not None else "identity (in-memory tensors at the model's size)"}
    return tf, info

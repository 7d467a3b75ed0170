"""``torchvision:<name>[.<WEIGHTS>]``: a torchvision classification model with its weights enum.

``torchvision:resnet50`` uses ``ResNet50_Weights.DEFAULT``; ``torchvision:resnet50.IMAGENET1K_V1``
names one entry of the enum. The input spec (crop size, resize size, mean/std, interpolation)
comes from the weights' own transforms. Offline, the weights file must already be in torch.hub's
cache (``$TORCH_HOME/hub/checkpoints``), or come from a local file (``weights: path``).
"""
from __future__ import annotations

import pickle
from typing import Any
from urllib.error import URLError

from ..errors import CheckpointError, ConfigError, OfflineError
from ..spec import DataSpec
from .checkpoints import load_state_dict_file, weights_only_loads
from .core import MODEL_FAMILIES, PixelModel, name_check, spec_reader
from .heads import head_name, head_out_features, reset_head


def _classification_models() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def resolve_torchvision_weights(rest: str) -> tuple[str, Any]:
    """``"resnet50.IMAGENET1K_V1"`` -> ``("resnet50", ResNet50_Weights.IMAGENET1K_V1)``."""
    import difflib

    from torchvision.models import get_model_weights

    arch, _, tag = rest.partition(".")
    known = _classification_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=5)
        raise ConfigError(f"torchvision has no classification model {arch!r}. "
                          f"Similar: {', '.join(close) or '(none)'}. Known: {', '.join(known)}.")
    enum = get_model_weights(arch)
    tag = tag or "DEFAULT"
    try:
        return arch, enum[tag]
    except KeyError:
        raise ConfigError(f"torchvision model {arch!r} has no weights {tag!r}; its weights: "
                          f"{', '.join(['DEFAULT'] + [w.name for w in enum])}.") from None


@name_check("torchvision")
def _check(rest: str) -> None:
    resolve_torchvision_weights(rest)


def spec_of_weights(weights: Any) -> DataSpec:
    """The input spec of a torchvision weights entry (its ImageClassification transforms)."""
    t = weights.transforms()
    crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
    interp = getattr(t.interpolation, "value", str(t.interpolation))
    return DataSpec((3, crop, crop), tuple(float(m) for m in t.mean), tuple(float(s) for s in t.std),
                    interp, crop / resize)


@spec_reader("torchvision")
def torchvision_spec(rest: str, *, pretrained: bool, weights: str | None, kwargs: dict) -> DataSpec:
    """The spec of the weights enum entry's transforms (whatever weights are loaded)."""
    return spec_of_weights(resolve_torchvision_weights(rest)[1])


@MODEL_FAMILIES.register("torchvision")
def torchvision_model(rest: str, num_classes: int, *, pretrained: bool, weights: str | None,
                      kwargs: dict) -> PixelModel:
    """torchvision:<name>[.<WEIGHTS>] -- a torchvision classifier with its weights enum
    (e.g. torchvision:resnet50.IMAGENET1K_V2); weights from download.pytorch.org or model.weights."""
    from torchvision.models import get_model

    from ..hub import require_url_file, url_cache_path

    arch, tv_weights = resolve_torchvision_weights(rest)
    spec = spec_of_weights(tv_weights)
    if weights is not None:
        state = load_state_dict_file(weights)
        net = get_model(arch, weights=None, **kwargs)
        key = f"{head_name(net)}.weight"
        if key in state and int(state[key].shape[0]) != head_out_features(net):
            reset_head(net, int(state[key].shape[0]))  # the file's head, replaced below if needed
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"weights file {weights} does not match torchvision model {arch}: {exc}") from None
    elif pretrained:
        require_url_file(tv_weights.url, f"torchvision weights {tv_weights}", url_cache_path(tv_weights.url),
                         "set `model.weights: /path/to/file.pth` (or `model.pretrained: false`)")
        cached = url_cache_path(tv_weights.url)
        try:
            with weights_only_loads():  # torchvision's builders call torch.load without weights_only
                net = get_model(arch, weights=tv_weights, **kwargs)
        except URLError as exc:
            raise OfflineError(f"downloading {tv_weights.url} failed ({exc}); put the file at {cached} or set "
                               f"`model.weights: /path/to/file.pth`.") from None
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"torchvision weights {cached} cannot be read ({type(exc).__name__}: {exc}); "
                                  f"the file is corrupt or partial: delete it and download it again.") from None
    else:
        net = get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    fresh = weights is None and not pretrained
    if head_out_features(net) != num_classes:
        reset_head(net, num_classes)
        fresh = True
    arch_spec = {"name": f"torchvision:{arch}.{tv_weights.name}", "num_classes": num_classes, "kwargs": kwargs,
                 "spec": spec.to_dict()}
    model = PixelModel(net, spec, arch_spec)
    model.fresh_head = fresh
    return model

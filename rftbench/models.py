"""Model registry: every model takes images in [0,1]; normalisation is a module inside it.

Names: ``small_cnn`` / ``small_resnet`` (built-ins, or ``builtin:<name>``),
``timm:<name>[.<pretrained tag>]``, ``torchvision:<name>``,
``robustbench:<dataset>/<threat>/<name>`` and ``file:<path>`` (a checkpoint saved by rftbench).
:func:`create_model` is the one door.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .registry import Registry


@dataclass(frozen=True)
class DataSpec:
    """What a model expects of its input: (C, H, W) size and the normalisation it applies."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        return cls(
            input_size=tuple(d["input_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bilinear"), crop_pct=float(d.get("crop_pct", 1.0)),
        )


class Normalize(nn.Module):
    """(x - mean) / std with per-channel constants kept as buffers (they follow .to(device))."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelModel(nn.Module):
    """A classifier on [0,1] images: ``net(normalize(x))``.

    ``arch`` is a JSON-able spec (``{"name", "num_classes", "kwargs"}``) from which
    :func:`create_model` rebuilds the same architecture, so a state dict plus ``arch`` is a
    complete, code-free checkpoint.
    """

    def __init__(self, net: nn.Module, spec: DataSpec, arch: dict[str, Any]):
        super().__init__()
        self.normalize = Normalize(spec.mean, spec.std)
        self.net = net
        self.spec = spec
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def num_classes(self) -> int:
        return int(self.arch["num_classes"])

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classification head for ``num_classes`` outputs."""
        self.net.reset_classifier(num_classes)
        self.arch = {**self.arch, "num_classes": num_classes}

    def head_parameters(self) -> list[nn.Parameter]:
        head = self.net.get_classifier()
        return list(head.parameters())


# ---------------------------------------------------------------- built-in networks
class SmallCNN(nn.Module):
    """A 4-layer CNN for small grayscale or colour images (the embedded default's network)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.num_features = 2 * w
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes).to(self.head.weight.device)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    """A ResNet-8-style network for 32 px inputs (3 stages of one basic block)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_chans, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.layers = nn.Sequential(_BasicBlock(w, w, 1), _BasicBlock(w, 2 * w, 2), _BasicBlock(2 * w, 4 * w, 2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = 4 * w
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.layers(self.stem(x))))

    get_classifier = SmallCNN.get_classifier
    reset_classifier = SmallCNN.reset_classifier


@dataclass(frozen=True)
class BuiltinModel:
    """A built-in network: its constructor, default kwargs and input spec."""

    build: Callable[..., nn.Module]
    spec: DataSpec
    kwargs: dict[str, Any] = field(default_factory=dict)


BUILTIN_MODELS: Registry[BuiltinModel] = Registry("built-in model")
BUILTIN_MODELS.add("small_cnn", BuiltinModel(SmallCNN, DataSpec((1, 16, 16), (0.5,), (0.5,)), {"in_chans": 1}))
BUILTIN_MODELS.add("small_resnet", BuiltinModel(SmallResNet, DataSpec((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), {"in_chans": 3}))

# A model family turns the part of a model name after "<family>:" into a PixelModel.
ModelFactory = Callable[..., PixelModel]
MODEL_FAMILIES: Registry[ModelFactory] = Registry("model family", entry_point_group="rftbench.models")


def split_name(name: str) -> tuple[str, str]:
    """``"timm:resnet18.a1_in1k"`` -> ``("timm", "resnet18.a1_in1k")``; bare names are built-ins."""
    family, sep, rest = name.partition(":")
    if not sep:
        return "builtin", name
    return family, rest


@MODEL_FAMILIES.register("builtin")
def _builtin(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    entry = BUILTIN_MODELS.get(rest)
    merged = {**entry.kwargs, **kwargs}
    spec = entry.spec
    if "in_chans" in merged and merged["in_chans"] != spec.input_size[0]:
        c = merged["in_chans"]
        spec = DataSpec((c, *spec.input_size[1:]), spec.mean[:1] * c if len(spec.mean) != c else spec.mean,
                        spec.std[:1] * c if len(spec.std) != c else spec.std)
    arch = {"name": f"builtin:{rest}", "num_classes": num_classes, "kwargs": merged, "spec": spec.to_dict()}
    if weights is None and pretrained:
        from .embedded import pretrained_checkpoint  # the embedded non-robust checkpoint

        weights = str(pretrained_checkpoint(rest))
    if weights is not None:
        model = load_checkpoint(weights)
        if model.arch["name"] != arch["name"]:
            raise CheckpointError(f"weights {weights} hold a {model.arch['name']} model, not {arch['name']}.")
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
        return model
    return PixelModel(entry.build(num_classes=num_classes, **merged), spec, arch)


@MODEL_FAMILIES.register("timm")
def _timm(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    import timm

    from .hub import require_hub_or_file

    model_name = rest
    if not timm.is_model(model_name.split(".")[0]):
        close = timm.list_models(f"*{model_name.split('.')[0][:6]}*")[:8]
        raise ConfigError(f"timm has no model {model_name!r}. Similar names: {', '.join(close) or '(none)'}; "
                          f"see `timm.list_models()` or `rftbench models list`.")
    use_hub = pretrained and weights is None
    if use_hub:
        require_hub_or_file(model_name)
    net = timm.create_model(model_name, pretrained=use_hub, num_classes=num_classes, **kwargs)
    if weights is not None:
        state = load_state_dict_file(weights)
        head = net.get_classifier()
        head_keys = {k for k in state if any(k.startswith(p) for p in _head_prefixes(net))}
        drop = [k for k in head_keys if state[k].shape != net.state_dict().get(k, state[k]).shape]
        for k in drop:
            del state[k]
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if k not in drop and not any(k.startswith(p) for p in _head_prefixes(net))]
        if missing or unexpected:
            raise CheckpointError(f"weights file {weights} does not match timm model {model_name}: "
                                  f"missing {missing[:5]}, unexpected {list(unexpected)[:5]}.")
        del head
    cfg = timm.data.resolve_data_config({}, model=net)
    spec = DataSpec(tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"]),
                    cfg.get("interpolation", "bicubic"), float(cfg.get("crop_pct", 1.0)))
    arch = {"name": f"timm:{model_name}", "num_classes": num_classes, "kwargs": kwargs, "spec": spec.to_dict()}
    return PixelModel(net, spec, arch)


def _head_prefixes(net: nn.Module) -> list[str]:
    head = net.get_classifier()
    return [n + "." for n, m in net.named_modules() if m is head and n] or ["head.", "fc.", "classifier."]


@MODEL_FAMILIES.register("file")
def _file(rest: str, num_classes: int, *, pretrained: bool, weights: str | None, kwargs: dict) -> PixelModel:
    model = load_checkpoint(rest)
    if num_classes and model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def create_model(name: str, num_classes: int, *, pretrained: bool = True, weights: str | None = None,
                 kwargs: dict | None = None) -> PixelModel:
    """Build the model ``name`` with a ``num_classes``-way head, taking images in [0,1]."""
    family, rest = split_name(name)
    factory = MODEL_FAMILIES.get(family)
    if weights is not None and not Path(weights).expanduser().is_file():
        raise CheckpointError(f"weights file {weights!r} does not exist; set model.weights to an existing file.")
    return factory(rest, num_classes, pretrained=pretrained, weights=weights, kwargs=dict(kwargs or {}))


# ---------------------------------------------------------------- checkpoints (code-free)
def save_checkpoint(model: PixelModel, path: str | Path) -> Path:
    """Save weights as safetensors and the architecture spec as ``<path>.json`` beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata={"arch": json.dumps(model.arch)})
    tmp.replace(path)
    arch_path = Path(str(path) + ".json")
    arch_path.write_text(json.dumps(model.arch, indent=2))
    return path


def _existing_checkpoint(path: str | Path) -> Path:
    """The checkpoint's path, after checking that it exists and is not a saved HTML page."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist.")
    with open(p, "rb") as f:
        head = f.read(64)
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        raise CheckpointError(f"{p} is an HTML page, not a checkpoint (a failed download, e.g. a Google Drive "
                              f"quota page). Delete it and download it again.")
    return p


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a weights-only torch file (never runs code)."""
    p = _existing_checkpoint(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {p}: {type(exc).__name__}: {exc}. "
                              f"The file is corrupt, truncated or not a weights-only checkpoint.") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} does not hold a state dict of tensors.")
    return obj


def load_checkpoint(path: str | Path) -> PixelModel:
    """Rebuild a model saved by :func:`save_checkpoint` (arch from the file's metadata or ``.json``)."""
    p = _existing_checkpoint(path)
    arch = None
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"cannot read checkpoint {p}: {exc}. The file is corrupt or truncated.") from None
        if "arch" in meta:
            arch = json.loads(meta["arch"])
    side = Path(str(p) + ".json")
    if arch is None and side.is_file():
        arch = json.loads(side.read_text())
    if arch is None:
        raise CheckpointError(f"{p} has no architecture spec (expected metadata or {side.name} beside it).")
    state = load_state_dict_file(p)
    model = create_model(arch["name"], arch["num_classes"], pretrained=False, kwargs=arch.get("kwargs", {}))
    try:
        model.net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {p} does not match its architecture {arch['name']}: {exc}") from None
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

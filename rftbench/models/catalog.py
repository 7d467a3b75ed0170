"""What ``rftbench models list`` shows: families, built-ins and timm name patterns."""
from __future__ import annotations

from typing import Any

from .builtin import BUILTIN_MODELS
from .core import MODEL_FAMILIES

# Families of timm names worth knowing (the paper's six backbones are among them).
TIMM_PATTERNS = ("resnet*", "convnext*", "vit_*", "*clip*", "swin*", "deit*", "efficientnet*", "regnet*",
                 "beit*", "eva*", "test_*")

# The paper-scale grid's backbones (benchmarks/grids/paper_grid.yaml): concrete timm names + tags.
PAPER_BACKBONES = {
    "swin": "timm:swin_base_patch4_window7_224.ms_in1k",
    "vit": "timm:vit_base_patch16_224.augreg_in21k_ft_in1k",
    "convnext": "timm:convnext_base.fb_in1k",
    "resnet50": "timm:resnet50.tv_in1k",
    "clip_vit": "timm:vit_base_patch16_clip_224.openai",
    "clip_convnext": "timm:convnext_base.clip_laion2b_augreg",
}


def _summary(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def describe_models(timm_pattern: str | None = None) -> dict[str, Any]:
    """A JSON-able description of the model registry (offline; imports timm, not RobustBench)."""
    import timm

    families = [{"name": e.name, "usage": _summary(getattr(e.obj, "__doc__", "")), "source": e.source}
                for e in MODEL_FAMILIES.entries()]
    builtins = [{"name": e.name, "description": e.obj.description, "input_size": list(e.obj.spec.input_size),
                 "kwargs": e.obj.kwargs} for e in BUILTIN_MODELS.entries()]
    pretrained = timm.list_pretrained()
    patterns = [{"pattern": p, "n_pretrained": len(timm.list_pretrained(p)),
                 "n_architectures": len(timm.list_models(p))} for p in TIMM_PATTERNS]
    out: dict[str, Any] = {
        "families": families, "builtins": builtins,
        "timm": {"version": timm.__version__, "n_architectures": len(timm.list_models()),
                 "n_pretrained": len(pretrained), "patterns": patterns,
                 "usage": "timm:<architecture>[.<pretrained tag>]; see `rftbench models list --timm 'vit_base*'`"},
        "paper_backbones": PAPER_BACKBONES,
    }
    if timm_pattern is not None:
        out["timm"]["matches"] = timm.list_pretrained(timm_pattern)
    return out

"""``partial``: the head plus the last ``blocks`` blocks train (or, with the option
``patterns``, the head plus every parameter whose name matches one of the shell-style patterns,
e.g. ``["blocks.11.*", "norm.*"]``); the rest stays frozen, in eval mode.

Blocks are timm's own parameter groups (``model.group_matcher(coarse=False)``, the grouping of
layer-wise LR decay: the stem, one group per block, then the head with what follows the last
block, such as a final norm, which trains whenever the head does); for other networks the
parameterised children of the longest ``nn.Sequential`` / ``nn.ModuleList``."""
from __future__ import annotations

import fnmatch

from torch import nn

from rftbench.errors import ConfigError
from rftbench.params import Param
from rftbench.regimes import Regime, head_names, register_regime


def model_blocks(net: nn.Module) -> tuple[list[list[str]], list[str]]:
    """(blocks in forward order, each a list of parameter names; the names after the last
    block: the head and anything between)."""
    names = [n for n, _ in net.named_parameters()]
    if hasattr(net, "group_matcher"):
        from timm.models import group_parameters

        groups = list(group_parameters(net, net.group_matcher(coarse=False)).values())
        return [list(g) for g in groups[1:-1]], list(groups[-1])
    seqs = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Sequential, nn.ModuleList))]
    best: list[list[str]] = []
    for prefix, seq in seqs:
        blocks = [[f"{prefix}.{c}.{p}" for p, _ in child.named_parameters()] for c, child in seq.named_children()]
        blocks = [b for b in blocks if b]
        if len(blocks) > len(best):
            best = blocks
    last = names.index(best[-1][-1]) + 1 if best else 0
    return best, names[last:]


@register_regime("partial")
class Partial(Regime):
    reference = "partial fine-tuning of the top layers (Yosinski et al., NeurIPS 2014, 'How transferable are features')"
    params = (Param("blocks", 1, 0, 1000, kind="int", help="how many of the last blocks train (with the head)"),)
    options = {"patterns": []}

    def check(self):
        pats = self.opts["patterns"]
        if not isinstance(pats, list) or not all(isinstance(p, str) and p for p in pats):
            raise ConfigError(f"regime 'partial': option patterns must be a list of name patterns, got {pats!r}.")

    def prepare(self, model):
        self.trainable(model, 0)  # a bad block count or pattern fails here, before any work

    def trainable(self, model, phase):
        head = head_names(model)
        if self.opts["patterns"]:
            return head | self._matched(model)
        blocks, tail = model_blocks(model.net)
        k = int(self.values["blocks"])
        if k > len(blocks):
            raise ConfigError(f"regime 'partial': blocks={k}, but {model.arch.get('name', 'the model')} has "
                              f"{len(blocks)} blocks; use 0..{len(blocks)}.")
        chosen = [n for b in (blocks[len(blocks) - k:] if k else []) for n in b]
        return head | set(tail) | set(chosen)

    def _matched(self, model) -> set[str]:
        names = [n for n, _ in model.net.named_parameters()]
        out: set[str] = set()
        for pat in self.opts["patterns"]:
            hit = fnmatch.filter(names, pat)
            if not hit:
                raise ConfigError(f"regime 'partial': pattern {pat!r} matches no parameter; names look like "
                                  f"{', '.join(names[:3])} ... {', '.join(names[-3:])}.")
            out |= set(hit)
        return out

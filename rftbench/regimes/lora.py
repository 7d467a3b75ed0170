"""``lora``: low-rank adapters (Hu et al., 2022) through Hugging Face ``peft`` on the model's
linear / 1x1 layers; the pretrained weights stay frozen (in eval mode), the adapters and the
head train. At the end of training the adapters are merged into the weights (peft's
``merge``), so the saved model is a plain network of its family (a timm model loads it).

Options: ``target_modules`` (module names or name suffixes, peft's matching; default per
family: ``qkv``, ``proj``, ``fc1``, ``fc2`` linears for ViTs and Swin, every ``nn.Linear`` and
1x1 ``nn.Conv2d`` for ConvNeXt, ResNet and others); the head is never a target (it trains whole)."""
from __future__ import annotations

from torch import nn

from rftbench.errors import ConfigError
from rftbench.params import Param
from rftbench.regimes import Regime, head_names, register_regime
from rftbench.regimes import set_train_mode as default_train_mode

TRANSFORMER_TARGETS = ("qkv", "proj", "fc1", "fc2")


def _matches(name: str, targets) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def default_targets(net: nn.Module) -> list[str]:
    """The modules LoRA adapts by default in ``net`` (full dotted names)."""
    family = type(net).__name__.lower()
    if "transformer" in family or "swin" in family or "vit" in family:
        return [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and _matches(n, TRANSFORMER_TARGETS)]
    return [n for n, m in net.named_modules() if isinstance(m, nn.Linear)
            or isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)]


def _is_lora(name: str) -> bool:
    return ".lora_" in name or name.startswith("lora_")


@register_regime("lora")
class Lora(Regime):
    reference = "Hu et al., ICLR 2022, 'LoRA: Low-Rank Adaptation of Large Language Models' (via Hugging Face peft)"
    params = (Param("rank", 8, 1, 256, kind="int", log=True, help="r: the adapters' rank"),
              Param("alpha", 16.0, 0.5, 512.0, log=True, help="lora_alpha: the update is scaled by alpha / rank"),
              Param("dropout", 0.0, 0.0, 0.5, help="dropout on the adapters' input"))
    options = {"target_modules": None}

    def check(self):
        t = self.opts["target_modules"]
        if t is not None and not (isinstance(t, list) and t and all(isinstance(x, str) and x for x in t)):
            raise ConfigError(f"regime 'lora': option target_modules must be a non-empty list of module names, got {t!r}.")

    def targets(self, model) -> list[str]:
        """Full names of the modules to adapt (the head excluded); ConfigError listing the
        modules there are when none matches."""
        net, head = model.net, {n.rsplit(".", 1)[0] for n in head_names(model)}
        wanted = self.opts["target_modules"]
        names = default_targets(net) if wanted is None else [n for n, _ in net.named_modules() if n and _matches(n, wanted)]
        names = [n for n in names if n not in head]
        if not names:
            found = sorted({n.rsplit(".", 1)[-1] for n, m in net.named_modules() if n and not list(m.children())})
            raise ConfigError(f"regime 'lora': no module of {type(net).__name__} matches target_modules "
                              f"{wanted or '(the default: linear and 1x1 conv layers)'}; its layers are named: "
                              f"{', '.join(found[:40])}{' ...' if len(found) > 40 else ''}.")
        return names

    def prepare(self, model):
        if any(_is_lora(n) for n, _ in model.net.named_parameters()):
            return  # already adapted (a model prepared before)
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=int(self.values["rank"]), lora_alpha=float(self.values["alpha"]),
                            lora_dropout=float(self.values["dropout"]), target_modules=self.targets(model))
        inject_adapter_in_model(config, model.net)

    def trainable(self, model, phase):
        return head_names(model) | {n for n, _ in model.net.named_parameters() if _is_lora(n)}

    def group_of(self, model, name, head):
        return "lora" if _is_lora(name) else super().group_of(model, name, head)

    def train_mode(self, model, names):
        default_train_mode(model, names)
        for n, m in model.net.named_modules():  # the adapters' dropout is theirs: it trains with them
            if n.endswith("lora_dropout"):
                m.train()

    def finish(self, model):
        from peft.tuners.lora import LoraLayer

        for name, m in list(model.net.named_modules()):
            if isinstance(m, LoraLayer):
                m.merge()
                parent, _, leaf = name.rpartition(".")
                setattr(model.net.get_submodule(parent) if parent else model.net, leaf, m.get_base_layer())

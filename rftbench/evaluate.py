"""The evaluator: clean accuracy, a pruned PGD sweep over an eps grid, expected robustness and
AutoAttack (pyautoattack) at the target eps, written as one JSON evaluation record.

Eps-balls nest: a sample broken at a smaller eps counts as broken at every larger one, so each
larger eps attacks only the survivors of the previous one (the pruned sweep).
"""
from __future__ import annotations

import gzip
import base64
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchattacks
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from . import __version__
from .attacks import autoattack
from .config import ExperimentConfig
from .data import eval_subset_indices, indices_sha256
from .metrics import er_name, expected_robustness
from .models import weights_sha256


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def _pgd(model: nn.Module, norm: str, eps: float, steps: int, step_ratio: float) -> torchattacks.Attack:
    cls = torchattacks.PGD if norm == "Linf" else torchattacks.PGDL2
    # No random start: the sweep is then deterministic per sample, so the pruned sweep gives
    # exactly the flags of the naive sweep with the nesting rule (restarts need random starts).
    return cls(model, eps=eps, alpha=step_ratio * eps, steps=steps, random_start=False)


def pgd_sweep_flags(model: nn.Module, loader: DataLoader, eps_grid: Sequence[float], *, norm: str,
                    steps: int, step_ratio: float, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample robustness flags (n_samples, len(eps_grid)) from the pruned PGD sweep.

    ``eps_grid`` is sorted and starts at 0 (column 0 = clean correctness). Returns the flags and
    the labels. Streams batches, so memory stays flat as the subset grows.
    """
    model.eval()
    flags_all, labels_all = [], []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        alive = predict(model, x) == y
        flags = torch.zeros(len(y), len(eps_grid), dtype=torch.bool, device=device)
        flags[:, 0] = alive
        for j, eps in enumerate(eps_grid[1:], start=1):
            idx = alive.nonzero().flatten()
            if len(idx) == 0:
                break
            adv = _pgd(model, norm, eps, steps, step_ratio)(x[idx], y[idx])
            alive[idx] = predict(model, adv) == y[idx]
            flags[:, j] = alive
        flags_all.append(flags.cpu())
        labels_all.append(y.cpu())
    return torch.cat(flags_all).numpy(), torch.cat(labels_all).numpy()


def quick_robustness(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, device: torch.device,
                     prefix: str = "val/") -> dict[str, float]:
    """Clean accuracy, PGD accuracy at the target eps and ER on a small fixed subset (validation)."""
    was_training = model.training
    idx = eval_subset_indices(len(dataset), cfg.train.val_samples, cfg.seed)
    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=cfg.data.eval_batch_size)
    grid = cfg.eps_grid()
    flags, _ = pgd_sweep_flags(model, loader, grid, norm=cfg.attack.norm, steps=cfg.eval.pgd_steps,
                               step_ratio=_eval_step_ratio(cfg), device=device)
    accs = flags.mean(0)
    model.train(was_training)
    return {f"{prefix}acc_clean": float(accs[0]), f"{prefix}acc_pgd": float(accs[-1]),
            f"{prefix}expected_robustness": expected_robustness(grid, accs, cfg.eval.distribution)}


def _eval_step_ratio(cfg: ExperimentConfig) -> float:
    return cfg.eval.step_size_ratio if cfg.eval.step_size_ratio is not None else 2.5 / cfg.eval.pgd_steps


def _pack_bool(a: np.ndarray) -> str:
    """Per-sample flags, compressed: base64(gzip(packbits)); shape is stored beside it."""
    return base64.b64encode(gzip.compress(np.packbits(a.astype(bool), axis=None).tobytes())).decode()


def unpack_bool(s: str, shape: Sequence[int]) -> np.ndarray:
    raw = np.frombuffer(gzip.decompress(base64.b64decode(s)), dtype=np.uint8)
    return np.unpackbits(raw)[: int(np.prod(shape))].reshape(shape).astype(bool)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "rftbench": __version__}
    for name in ("torch", "torchvision", "torchattacks", "pyautoattack", "timm", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass
class EvaluationRecord:
    """Everything one evaluation measured, with what it takes to reproduce and re-check it."""

    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, k: str) -> Any:
        return self.data[k]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_json())
        return p

    @classmethod
    def load(cls, path: str | Path) -> "EvaluationRecord":
        return cls(json.loads(Path(path).read_text()))

    def metrics(self) -> dict[str, float]:
        d = self.data
        out = {"eval/acc_clean": d["clean_accuracy"], "eval/acc_pgd": d["pgd"]["accuracy"][-1],
               "eval/expected_robustness": d["expected_robustness"]["value"]}
        if d.get("autoattack"):
            out["eval/acc_autoattack"] = d["autoattack"]["accuracy"]
        for e, a in zip(d["pgd"]["eps_grid"], d["pgd"]["accuracy"]):
            out[f"eval/acc_pgd_eps_{e * 255:.2f}_255"] = a
        out["eval/time_s"] = d["timings"]["total_s"]
        return out


def evaluate_model(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, *, device: torch.device,
                   dataset_name: str, split: str, with_autoattack: bool | None = None) -> EvaluationRecord:
    """Evaluate ``model`` on a fixed seeded subset of ``dataset`` as ``cfg.eval`` says."""
    ec, ac = cfg.eval, cfg.attack
    t0 = time.perf_counter()
    model.eval()
    idx = eval_subset_indices(len(dataset), ec.n_samples, ec.subset_seed)
    subset = Subset(dataset, idx.tolist())
    loader = DataLoader(subset, batch_size=cfg.data.eval_batch_size)
    grid = cfg.eps_grid()
    step_ratio = _eval_step_ratio(cfg)
    flags, labels = pgd_sweep_flags(model, loader, grid, norm=ac.norm, steps=ec.pgd_steps,
                                    step_ratio=step_ratio, device=device)
    t_sweep = time.perf_counter() - t0
    accs = flags.mean(0).tolist()
    er = expected_robustness(grid, accs, ec.distribution)
    attack_desc = f"PGD-{ec.pgd_steps}"
    record: dict[str, Any] = {
        "rftbench_record": 1,
        "model": {"arch": getattr(model, "arch", None), "weights_sha256": weights_sha256(model)},
        "dataset": dataset_name, "split": split, "n_samples": int(len(idx)),
        "subset": {"seed": ec.subset_seed, "indices_sha256": indices_sha256(idx), "n_requested": ec.n_samples,
                   "size_of_split": len(dataset)},
        "threat_model": {"norm": ac.norm, "target_eps": ac.target_eps},
        "clean_accuracy": accs[0],
        "pgd": {"eps_grid": grid, "accuracy": accs, "steps": ec.pgd_steps, "step_size_ratio": step_ratio,
                "restarts": 1, "random_start": False, "library": "torchattacks", "pruned": True},
        "expected_robustness": {"value": er, "distribution": ec.distribution, "eps_max": grid[-1],
                                "name": er_name(grid, ec.distribution, attack_desc), "attack": attack_desc},
        "autoattack": None,
        "certified": False,
        "seeds": {"experiment": cfg.seed, "subset": ec.subset_seed},
        "versions": library_versions(),
        "per_sample": {"indices": idx.tolist(), "labels": labels.tolist(),
                       "pgd_flags": _pack_bool(flags), "pgd_flags_shape": list(flags.shape)},
        "timings": {"pgd_sweep_s": t_sweep},
        "warnings": [],
    }
    run_aa = ec.autoattack.enabled if with_autoattack is None else with_autoattack
    if run_aa and ac.target_eps > 0:
        record["autoattack"] = run_autoattack(model, subset, cfg, device)
        n_aa = record["autoattack"]["n_samples"]
        record["certified"] = (ec.autoattack.version == "standard"
                               and n_aa == min(ec.n_samples, len(dataset)))
        aa_acc, pgd_acc = record["autoattack"]["accuracy"], float(flags[:n_aa, -1].mean())
        if aa_acc > pgd_acc + 1e-9:
            record["warnings"].append(f"AutoAttack accuracy {aa_acc:.3f} is above PGD's {pgd_acc:.3f} "
                                      f"on the same samples: a sign of gradient masking or a bug.")
    accs_arr = np.asarray(accs)
    if np.any(np.diff(accs_arr) > 1e-9):
        record["warnings"].append("robust accuracy increases with eps somewhere on the grid.")
    record["timings"]["total_s"] = time.perf_counter() - t0
    return EvaluationRecord(record)


def run_autoattack(model: nn.Module, subset: Dataset, cfg: ExperimentConfig, device: torch.device) -> dict[str, Any]:
    """pyautoattack at the target eps on the first ``autoattack.n_samples`` of the subset."""
    ec, ac = cfg.eval, cfg.attack
    n = min(ec.autoattack.n_samples, len(subset))
    xs, ys = [], []
    for x, y in DataLoader(Subset(subset, list(range(n))), batch_size=cfg.data.eval_batch_size):
        xs.append(x)
        ys.append(y)
    x, y = torch.cat(xs).to(device), torch.cat(ys).to(device)
    num_classes = int(model(x[:1]).shape[1])
    aa = autoattack(model, eps=ac.target_eps, norm=ac.norm, version=ec.autoattack.version,
                    num_classes=num_classes, device=device, seed=cfg.seed, attacks=ec.autoattack.attacks)
    t0 = time.perf_counter()
    _, y_adv = aa.run_standard_evaluation(x, y, batch_size=ec.autoattack.batch_size)
    flags = (y_adv.to(y.device) == y).cpu().numpy()
    return {"version": ec.autoattack.version, "attacks": list(aa.attacks_to_run), "eps": ac.target_eps,
            "norm": ac.norm, "n_samples": n, "accuracy": float(flags.mean()), "seed": cfg.seed,
            "n_target_classes": aa.apgd_targeted.n_target_classes, "library": "pyautoattack",
            "flags": _pack_bool(flags), "time_s": time.perf_counter() - t0}

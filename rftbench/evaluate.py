"""The evaluator: clean accuracy, a pruned PGD sweep over an eps grid, expected robustness,
AutoAttack (pyautoattack; torchattacks' as a second opinion) at the target eps and sanity
checks, written as one JSON evaluation record (:mod:`rftbench.records`).

It works on any model that maps [0,1] images (N,C,H,W) to logits (N, classes), also ones
rftbench did not train. The evaluation subset is a fixed, seeded set of ``eval.n_samples``
indices of the split; AutoAttack covers its first ``eval.autoattack.n_samples``, the sanity
probe its first ``eval.checks.probe_samples``. Batches stream, so memory stays flat as the
subset grows; AutoAttack runs in chunks of ``eval.autoattack.batch_size`` samples (a chunk is
one pyautoattack evaluation), so a sample's result depends only on its chunk.

Sharding (``shard=(i, N)``) evaluates one contiguous slice of the subset. Slices start at
multiples of one block (the least common multiple of the evaluation and AutoAttack batch
sizes), so every batch and chunk of a shard is one of the unsharded evaluation: merged shard
records hold exactly the numbers of an unsharded evaluation.
"""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .checks import default_large_eps
from .config import ExperimentConfig
from .data import eval_subset_indices, indices_sha256
from .errors import ConfigError
from .eval_attacks import (PGDSettings, predict, robust_under_pgd, run_pyautoattack,
                           run_torchattacks_autoattack)
from .metrics import expected_robustness, resolve_distribution
from .models import weights_sha256
from .records import (EvaluationRecord, RecordError, SampleResults, library_versions, merge_records,  # noqa: F401
                      summarize)
from .sweep import input_gradients_only, naive_sweep, pruned_sweep

__all__ = ["EvaluationRecord", "evaluate_model", "quick_robustness", "merge_records", "parse_shard", "shard_range",
           "pgd_settings"]


def pgd_settings(cfg: ExperimentConfig) -> PGDSettings:
    """The evaluation PGD of ``cfg.eval`` (threat model of ``cfg.attack``); seeds from ``cfg.seed``."""
    ec = cfg.eval
    ratio = ec.step_size_ratio if ec.step_size_ratio is not None else 2.5 / ec.pgd_steps
    return PGDSettings(norm=cfg.attack.norm, steps=ec.pgd_steps, step_ratio=ratio, restarts=ec.restarts,
                       random_start=ec.random_start, seed=cfg.seed)


def large_eps_pgd(s: PGDSettings) -> PGDSettings:
    """The attack of the large-eps check: the evaluation PGD with at least 20 steps of 2.5/steps
    * eps (few large steps bounce between corners of a huge ball and would raise false alarms)."""
    steps = max(s.steps, 20)
    return dataclasses.replace(s, steps=steps, step_ratio=2.5 / steps)


def _batches(dataset: Dataset, indices: np.ndarray, batch_size: int, num_workers: int = 0,
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(images, labels, dataset indices) of ``indices`` in order, ``batch_size`` at a time."""
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, num_workers=num_workers)
    for b, (x, y) in enumerate(loader):
        yield x, torch.as_tensor(y), indices[b * batch_size: b * batch_size + len(y)]


def quick_robustness(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, device: torch.device,
                     prefix: str = "val/") -> dict[str, float]:
    """Clean accuracy, PGD accuracy at the target eps and ER on a small fixed subset (validation)."""
    was_training = model.training
    idx = eval_subset_indices(len(dataset), cfg.train.val_samples, cfg.seed)
    grid = cfg.eps_grid()
    flags = pruned_sweep(model, _batches(dataset, idx, cfg.data.eval_batch_size), grid, pgd_settings(cfg), device)
    accs = flags.mean(0)
    model.train(was_training)
    return {f"{prefix}acc_clean": float(accs[0]), f"{prefix}acc_pgd": float(accs[-1]),
            f"{prefix}expected_robustness": expected_robustness(grid, accs, cfg.eval.distribution)}


# ---------------------------------------------------------------- shards
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): shard index (0-based) and number of shards."""
    m = _SHARD.match(text or "")
    if not m:
        raise ConfigError(f"--shard {text!r} must look like i/N (0-based index), e.g. 0/4.")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text!r}: the index must lie in 0..{max(n - 1, 0)} and N >= 1.")
    return i, n


def shard_block(cfg: ExperimentConfig) -> int:
    """Shard boundaries are multiples of this many samples (see the module doc)."""
    bs = cfg.data.eval_batch_size
    return math.lcm(bs, cfg.eval.autoattack.batch_size) if cfg.eval.autoattack.enabled else bs


def shard_range(n_total: int, shard: tuple[int, int], block: int) -> tuple[int, int]:
    """[start, end) positions of shard ``(i, N)`` of a subset of ``n_total`` samples."""
    i, n = shard
    n_blocks = math.ceil(n_total / block)
    if n > n_blocks:
        raise ConfigError(f"cannot cut {n_total} samples into {n} shards: shards hold whole blocks of {block} "
                          f"samples (the least common multiple of data.eval_batch_size and "
                          f"eval.autoattack.batch_size), so at most {n_blocks} shard(s). Use fewer shards or "
                          f"smaller batch sizes.")
    lo, hi = i * n_blocks // n, (i + 1) * n_blocks // n
    return lo * block, min(hi * block, n_total)


# ---------------------------------------------------------------- the evaluation
@dataclass
class _Plan:
    subset: np.ndarray   # all subset indices (into the split)
    start: int
    end: int
    n_aa: int            # AutoAttack covers subset positions [0, n_aa)
    n_probe: int         # the sanity probe covers positions [0, n_probe)


def _settings(cfg: ExperimentConfig, sample_shape: Sequence[int], run_aa: bool, n_aa: int) -> dict[str, Any]:
    ec, ac = cfg.eval, cfg.attack
    ch = ec.checks
    aa = None
    if run_aa:
        aa = {"library": "pyautoattack", "version": ec.autoattack.version,
              "requested_attacks": list(ec.autoattack.attacks), "eps": ac.target_eps, "norm": ac.norm,
              "n_samples_designated": n_aa, "chunk_size": ec.autoattack.batch_size, "seed": cfg.seed,
              "second_opinion": ec.autoattack.second_opinion}
    large = ch.large_eps if ch.large_eps is not None else default_large_eps(ac.norm, sample_shape)
    return {"eps_grid": cfg.eps_grid(), "distribution": ec.distribution, "pgd": pgd_settings(cfg).to_dict(),
            "batch_size": cfg.data.eval_batch_size, "autoattack": aa,
            "checks": {"probe_samples": ch.probe_samples, "large_eps": large,
                       "large_eps_pgd": large_eps_pgd(pgd_settings(cfg)).to_dict(),
                       "large_eps_max_accuracy": ch.large_eps_max_accuracy,
                       "monotone_tolerance": ch.monotone_tolerance, "square_tolerance": ch.square_tolerance}}


def evaluate_model(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, *, device: torch.device | str,
                   dataset_name: str, split: str, with_autoattack: bool | None = None,
                   shard: tuple[int, int] | None = None,
                   reference: EvaluationRecord | None = None) -> EvaluationRecord:
    """Evaluate ``model`` on the fixed seeded subset of ``dataset`` (the ``split`` of ``dataset_name``)
    as ``cfg.eval`` says; ``shard=(i, N)`` evaluates slice i of N (merge with :func:`merge_records`).

    ``reference``: a stored record of this model on this subset; its per-sample clean results
    must reproduce (check ``clean_reproduces_reference``).
    """
    with input_gradients_only(model):
        return _evaluate(model, dataset, cfg, device=device, dataset_name=dataset_name, split=split,
                         with_autoattack=with_autoattack, shard=shard, reference=reference)


def _evaluate(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, *, device: torch.device | str,
              dataset_name: str, split: str, with_autoattack: bool | None, shard: tuple[int, int] | None,
              reference: EvaluationRecord | None) -> EvaluationRecord:
    ec, ac = cfg.eval, cfg.attack
    t0 = time.perf_counter()
    resolve_distribution(ec.distribution)  # fail on a bad name before any work
    model.eval()
    grid = cfg.eps_grid()
    settings_pgd = pgd_settings(cfg)
    subset = eval_subset_indices(len(dataset), ec.n_samples, ec.subset_seed)
    n_total = len(subset)
    run_aa = (ec.autoattack.enabled if with_autoattack is None else with_autoattack) and ac.target_eps > 0
    if run_aa and ec.autoattack.version == "custom" and not ec.autoattack.attacks:
        raise ConfigError("autoattack.version 'custom' needs autoattack.attacks, e.g. [apgd-ce, apgd-t].")
    if run_aa and ec.autoattack.second_opinion and ec.autoattack.version not in ("standard", "plus", "rand"):
        raise ConfigError("eval.autoattack.second_opinion (torchattacks' AutoAttack) needs version standard, "
                          "plus or rand.")
    start, end = (0, n_total) if shard is None else shard_range(n_total, shard, shard_block(cfg))
    plan = _Plan(subset, start, end, min(ec.autoattack.n_samples, n_total) if run_aa else 0,
                 min(ec.checks.probe_samples, n_total))
    bs = cfg.data.eval_batch_size
    nw = cfg.data.num_workers
    mine = subset[start:end]
    timings: dict[str, float] = {}

    # 1) the pruned sweep (column 0 = clean)
    t = time.perf_counter()
    seen_labels: list[np.ndarray] = []

    def keep_labels(batches):
        for x, y, idx in batches:
            seen_labels.append(y.numpy())
            yield x, y, idx

    flags = pruned_sweep(model, keep_labels(_batches(dataset, mine, bs, nw)), grid, settings_pgd, device)
    timings["pgd_sweep_s"] = time.perf_counter() - t

    # 2) clean accuracy again (a randomized or stateful model does not reproduce), and vs a reference
    t = time.perf_counter()
    clean_again = np.concatenate([(predict(model, x.to(device)) == y.to(device)).cpu().numpy()
                                  for x, y, _ in _batches(dataset, mine, bs, nw)]) if len(mine) else np.zeros(0, bool)
    ref_info = _compare_reference(reference, subset, start, end, clean_again, model) if reference is not None else None
    timings["clean_recheck_s"] = time.perf_counter() - t

    # 3) the sanity probe: a naive sweep (no nesting) and PGD at a very large eps
    t = time.perf_counter()
    probe_idx = subset[start:min(end, plan.n_probe)] if start < plan.n_probe else subset[:0]
    sample_shape = tuple(dataset[int(subset[0])][0].shape) if n_total else (1, 1, 1)
    settings = _settings(cfg, sample_shape, run_aa, plan.n_aa)
    large_eps = settings["checks"]["large_eps"]
    probe_raw = naive_sweep(model, _batches(dataset, probe_idx, bs, nw), grid, settings_pgd, device)
    large_pgd = large_eps_pgd(settings_pgd)
    probe_large = np.concatenate([robust_under_pgd(model, x.to(device), y.to(device), idx, large_eps,
                                                   large_pgd).cpu().numpy()
                                  for x, y, idx in _batches(dataset, probe_idx, bs, nw)]) & probe_raw[:, 0] \
        if len(probe_idx) else np.zeros(0, bool)
    timings["sanity_probe_s"] = time.perf_counter() - t

    # 4) AutoAttack on positions [0, n_aa), in chunks
    aa_broken = np.zeros(0, np.uint8)
    ta_flags = np.zeros(0, bool) if (run_aa and ec.autoattack.second_opinion) else None
    aa_attacks: list[str] = []
    n_tc = None
    lib_warn: list[str] = []
    if run_aa and start < plan.n_aa:
        t = time.perf_counter()
        aa_idx = subset[start:min(end, plan.n_aa)]
        num_classes = None
        parts, ta_parts = [], []
        for x, y, _ in _batches(dataset, aa_idx, ec.autoattack.batch_size, nw):
            x, y = x.to(device), y.to(device)
            if num_classes is None:
                with torch.no_grad():
                    num_classes = int(model(x[:1]).shape[1])
            res = run_pyautoattack(model, x, y, eps=ac.target_eps, norm=ac.norm, version=ec.autoattack.version,
                                   num_classes=num_classes, seed=cfg.seed, batch_size=ec.autoattack.batch_size,
                                   attacks=ec.autoattack.attacks or None, device=device)
            parts.append(res.broken_by)
            aa_attacks, n_tc = res.attacks, res.n_target_classes
            lib_warn += [m for m in res.library_warnings if m not in lib_warn]
            if ta_flags is not None:
                t_ta = time.perf_counter()
                ta_parts.append(run_torchattacks_autoattack(model, x, y, eps=ac.target_eps, norm=ac.norm,
                                                            version=ec.autoattack.version,
                                                            num_classes=num_classes, seed=cfg.seed))
                timings["autoattack_torchattacks_s"] = timings.get("autoattack_torchattacks_s", 0.0) \
                    + time.perf_counter() - t_ta
        aa_broken = np.concatenate(parts)
        if ta_flags is not None:
            ta_flags = np.concatenate(ta_parts)
        timings["autoattack_s"] = time.perf_counter() - t - timings.get("autoattack_torchattacks_s", 0.0)

    labels = np.concatenate(seen_labels).astype(np.int64) if seen_labels else np.zeros(0, np.int64)
    samples = SampleResults(start=start, indices=mine.astype(np.int64), labels=labels, pgd_flags=flags,
                            aa_broken_by=aa_broken, ta_flags=ta_flags, probe_raw=probe_raw, probe_large=probe_large,
                            clean_recheck_mismatch=int(np.sum(clean_again != flags[:, 0])), reference=ref_info,
                            aa_attacks=aa_attacks, aa_n_target_classes=n_tc, aa_library_warnings=lib_warn)
    meta = {
        "model": {"arch": getattr(model, "arch", None), "weights_sha256": weights_sha256(model),
                  "class": type(model).__name__},
        "dataset": dataset_name, "split": split,
        "subset": {"seed": ec.subset_seed, "indices_sha256": indices_sha256(subset), "n_requested": ec.n_samples,
                   "size_of_split": len(dataset), "n_total": n_total, "designated_size": n_total},
        "shard": None if shard is None else {"index": shard[0], "count": shard[1], "positions": [start, end],
                                             "block": shard_block(cfg)},
        "threat_model": {"norm": ac.norm, "target_eps": ac.target_eps},
        "settings": settings,
        "seeds": {"experiment": cfg.seed, "subset": ec.subset_seed, "pgd_starts": cfg.seed,
                  "autoattack": cfg.seed if run_aa else None},
        "versions": library_versions(),
    }
    timings["total_s"] = time.perf_counter() - t0
    return summarize(meta, samples, timings)


def _compare_reference(reference: EvaluationRecord, subset: np.ndarray, start: int, end: int,
                       clean_now: np.ndarray, model: nn.Module) -> dict[str, Any]:
    """Per-sample clean results now vs those stored in ``reference`` (same subset required)."""
    ref = reference.data
    if ref["subset"]["indices_sha256"] != indices_sha256(subset):
        raise RecordError("the reference record evaluated another subset of samples (its subset hash differs); "
                          "evaluate with the same eval.n_samples and eval.subset_seed as the reference.")
    rs = reference.samples()
    # the reference may be a shard: compare where both hold the sample
    lo, hi = max(start, rs.start), min(end, rs.start + rs.n)
    if lo >= hi:
        raise RecordError("the reference record holds none of the samples of this evaluation (another shard?).")
    stored = rs.pgd_flags[lo - rs.start:hi - rs.start, 0]
    now = clean_now[lo - start:hi - start]
    same_weights = ref["model"]["weights_sha256"] == weights_sha256(model)
    return {"mismatch": int(np.sum(stored != now)), "n": int(hi - lo),
            "against": "the reference record" + ("" if same_weights else " (whose weights sha256 differs)"),
            "stored_clean_accuracy": ref["clean_accuracy"]}


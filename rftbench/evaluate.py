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
from .pgd_sweep import input_gradients_only, naive_sweep, pruned_sweep

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
def _settings(cfg: ExperimentConfig, sample_shape: Sequence[int], run_aa: bool, n_aa: int) -> dict[str, Any]:
    """What the record states about how it was measured (also what shards must agree on)."""
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
    ec, ac = cfg.eval, cfg.attack
    t0 = time.perf_counter()
    resolve_distribution(ec.distribution)  # fail on bad settings before any work
    run_aa = (ec.autoattack.enabled if with_autoattack is None else with_autoattack) and ac.target_eps > 0
    _check_autoattack_config(ec.autoattack.version, ec.autoattack.attacks, running=run_aa)
    if run_aa and ec.autoattack.second_opinion and ec.autoattack.version not in ("standard", "plus", "rand"):
        raise ConfigError("eval.autoattack.second_opinion (torchattacks' AutoAttack) needs version standard, "
                          "plus or rand.")
    subset = eval_subset_indices(len(dataset), ec.n_samples, ec.subset_seed)
    n_total = len(subset)
    start, end = (0, n_total) if shard is None else shard_range(n_total, shard, shard_block(cfg))
    n_aa = min(ec.autoattack.n_samples, n_total) if run_aa else 0
    mine = subset[start:end]

    def batches(idx: np.ndarray, size: int = cfg.data.eval_batch_size):
        return _batches(dataset, idx, size, cfg.data.num_workers)

    grid, pgd = cfg.eps_grid(), pgd_settings(cfg)
    sample_shape = tuple(dataset[int(subset[0])][0].shape) if n_total else (1, 1, 1)
    settings = _settings(cfg, sample_shape, run_aa, n_aa)
    timings: dict[str, float] = {}
    model.eval()
    with input_gradients_only(model):
        # 1) the pruned sweep (column 0 = clean)
        t = time.perf_counter()
        labels: list[np.ndarray] = []

        def keeping_labels(stream):
            for x, y, idx in stream:
                labels.append(y.numpy())
                yield x, y, idx

        flags = pruned_sweep(model, keeping_labels(batches(mine)), grid, pgd, device)
        timings["pgd_sweep_s"] = time.perf_counter() - t

        # 2) clean results again (a randomized or stateful model does not reproduce), and vs a reference
        t = time.perf_counter()
        clean_again = (np.concatenate([(predict(model, x.to(device)) == y.to(device)).cpu().numpy()
                                       for x, y, _ in batches(mine)]) if len(mine) else np.zeros(0, bool))
        ref_info = None if reference is None else _compare_reference(reference, subset, start, end, clean_again,
                                                                     model)
        timings["clean_recheck_s"] = time.perf_counter() - t

        # 3) the sanity probe on positions [0, probe_samples): a naive sweep and PGD at a very large eps
        t = time.perf_counter()
        probe_idx = subset[start:max(start, min(end, ec.checks.probe_samples))]
        probe_raw = naive_sweep(model, batches(probe_idx), grid, pgd, device)
        probe_large = _robust_at(model, batches(probe_idx), settings["checks"]["large_eps"], large_eps_pgd(pgd),
                                 device) & probe_raw[:, 0]
        timings["sanity_probe_s"] = time.perf_counter() - t

        # 4) AutoAttack on positions [0, n_aa), in chunks
        aa = _autoattack(model, batches(subset[start:max(start, min(end, n_aa))], ec.autoattack.batch_size), cfg,
                         device, timings)
    samples = SampleResults(start=start, indices=mine.astype(np.int64),
                            labels=np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
                            pgd_flags=flags, probe_raw=probe_raw, probe_large=probe_large,
                            clean_recheck_mismatch=int(np.sum(clean_again != flags[:, 0])), reference=ref_info, **aa)
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


def _robust_at(model: nn.Module, batches, eps: float, pgd: PGDSettings, device) -> np.ndarray:
    """Per-sample robustness (bool) under PGD at ``eps``, batch by batch."""
    parts = [robust_under_pgd(model, x.to(device), y.to(device), idx, eps, pgd).cpu().numpy()
             for x, y, idx in batches]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _autoattack(model: nn.Module, chunks, cfg: ExperimentConfig, device, timings: dict[str, float]) -> dict[str, Any]:
    """pyautoattack (and torchattacks' AutoAttack when asked) on each chunk; the SampleResults fields."""
    ec, ac = cfg.eval, cfg.attack
    second = ec.autoattack.second_opinion
    out: dict[str, Any] = {"aa_broken_by": np.zeros(0, np.uint8), "ta_flags": None, "aa_attacks": [],
                           "aa_n_target_classes": None, "aa_library_warnings": []}
    parts, ta_parts = [], []
    t_aa = t_ta = 0.0
    num_classes = None
    for x, y, _ in chunks:
        x, y = x.to(device), y.to(device)
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
        t = time.perf_counter()
        res = run_pyautoattack(model, x, y, eps=ac.target_eps, norm=ac.norm, version=ec.autoattack.version,
                               num_classes=num_classes, seed=cfg.seed, batch_size=ec.autoattack.batch_size,
                               attacks=ec.autoattack.attacks or None, device=device)
        t_aa += time.perf_counter() - t
        parts.append(res.broken_by)
        out["aa_attacks"], out["aa_n_target_classes"] = res.attacks, res.n_target_classes
        out["aa_library_warnings"] += [m for m in res.library_warnings if m not in out["aa_library_warnings"]]
        if second:
            t = time.perf_counter()
            ta_parts.append(run_torchattacks_autoattack(model, x, y, eps=ac.target_eps, norm=ac.norm,
                                                        version=ec.autoattack.version, num_classes=num_classes,
                                                        seed=cfg.seed))
            t_ta += time.perf_counter() - t
    if parts:
        out["aa_broken_by"] = np.concatenate(parts)
        timings["autoattack_s"] = t_aa
        if second:
            out["ta_flags"] = np.concatenate(ta_parts)
            timings["autoattack_torchattacks_s"] = t_ta
    return out


PYAUTOATTACK_ATTACKS = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


def _check_autoattack_config(version: str, attacks: Sequence[str], running: bool) -> None:
    if running and version == "custom" and not attacks:
        raise ConfigError("eval.autoattack.version 'custom' needs eval.autoattack.attacks, e.g. [apgd-ce, apgd-t].")
    if version != "custom" and attacks:
        raise ConfigError(f"eval.autoattack.attacks is used only with version 'custom'; version {version!r} runs "
                          f"its own list. Remove attacks or set version: custom.")
    unknown = [a for a in attacks if a not in PYAUTOATTACK_ATTACKS]
    if unknown:
        raise ConfigError(f"eval.autoattack.attacks: unknown attack(s) {unknown}; pyautoattack knows "
                          f"{', '.join(PYAUTOATTACK_ATTACKS)}.")


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


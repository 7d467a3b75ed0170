"""Measuring the threats of ``eval.threats`` on one block of the evaluation subset (the same
samples, batches and AutoAttack chunks as the training threat's): per norm threat the pruned
sweep, the checks probe (naive sweep, very large eps) and AutoAttack at its target; for the
corruptions, each sample's prediction on each corrupted copy (from :class:`CorruptionCache`).

``batches(idx, size=None)`` yields (images (N,C,H,W) in [0,1], labels (N,), dataset indices (N,)).
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import numpy as np
from torch import nn

from ..attacks.autoattack import run_pyautoattack
from ..attacks.pruned import naive_sweep, pruned_sweep, robust_at
from ..attacks.startable import predict
from .corruptions import CorruptionCache
from .threats import CorruptionThreat, NormThreat, model_classes


def _autoattack(model: nn.Module, chunks, t: NormThreat, seed: int, device) -> dict[str, Any]:
    """pyautoattack at the threat's target on each chunk: the per-sample part's AutoAttack fields."""
    aa = t.settings["autoattack"]
    out: dict[str, Any] = {"aa_broken_by": np.zeros(0, np.uint8), "aa_attacks": [], "aa_n_target_classes": None,
                           "aa_library_warnings": []}
    parts = []
    for x, y, _ in chunks:
        x, y = x.to(device), y.to(device)
        res = run_pyautoattack(model, x, y, eps=t.eps, norm=t.norm, version=aa["version"],
                               num_classes=model_classes(model, x), seed=seed, batch_size=aa["chunk_size"],
                               attacks=aa["requested_attacks"] or None, device=device)
        parts.append(res.broken_by)
        out["aa_attacks"], out["aa_n_target_classes"] = res.attacks, res.n_target_classes
        out["aa_library_warnings"] += [m for m in res.library_warnings if m not in out["aa_library_warnings"]]
    if parts:
        out["aa_broken_by"] = np.concatenate(parts)
    return out


def measure_norm(model: nn.Module, batches: Callable, t: NormThreat, subset: np.ndarray, lo: int, hi: int,
                 probe_n: int, seed: int, device) -> dict[str, Any]:
    """One norm threat on subset positions [lo, hi): its per-sample part."""
    idx = subset[lo:hi]
    flags = pruned_sweep(model, batches(idx), t.grid, t.sweep, device)
    probe_idx = subset[lo:max(lo, min(hi, probe_n))]
    probe_raw = naive_sweep(model, batches(probe_idx), t.grid, t.sweep, device)
    large = t.settings["checks"]["large_eps"]
    probe_large = robust_at(model, batches(probe_idx), large, t.sweep.for_large_eps(), device) & probe_raw[:, 0]
    part = {"sweep_flags": flags, "probe_raw": probe_raw, "probe_large": probe_large}
    if t.aa_run:
        aa_idx = subset[lo:max(lo, min(hi, t.n_aa))]
        part.update(_autoattack(model, batches(aa_idx, t.settings["autoattack"]["chunk_size"]), t, seed, device))
    else:
        part.update({"aa_broken_by": np.zeros(0, np.uint8), "aa_attacks": [], "aa_n_target_classes": None,
                     "aa_library_warnings": []})
    return part


def measure_corruptions(model: nn.Module, batches: Callable, t: CorruptionThreat, idx: np.ndarray,
                        cache: CorruptionCache, device) -> dict[str, Any]:
    """Correct predictions (bool, n x pairs) on each corrupted copy, and the block's content hash
    (sha256 over the corrupted images' hashes, pair by pair and batch by batch)."""
    cols: list[np.ndarray] = []
    block = hashlib.sha256()
    for x, y, ix in batches(idx):
        row = []
        for name, sev in t.pairs:
            xc, digest = cache.get(x, ix, name, sev, t.seed)
            block.update(digest.encode())
            row.append((predict(model, xc.to(device=device, dtype=x.dtype)) == y.to(device)).cpu().numpy())
        cols.append(np.stack(row, 1) if row else np.zeros((len(y), 0), bool))
    flags = np.concatenate(cols) if cols else np.zeros((0, len(t.pairs)), bool)
    return {"flags": flags, "block_sha256": [block.hexdigest()]}


def measure_block(model: nn.Module, batches: Callable, threats: list, subset: np.ndarray, lo: int, hi: int,
                  probe_n: int, seed: int, cache: CorruptionCache, device) -> dict[str, dict[str, Any]]:
    """Every threat that is not the training threat on positions [lo, hi): per-sample parts by key."""
    out: dict[str, dict[str, Any]] = {}
    for t in threats:
        if isinstance(t, CorruptionThreat):
            out[t.key] = measure_corruptions(model, batches, t, subset[lo:hi], cache, device)
        elif not t.primary:
            out[t.key] = measure_norm(model, batches, t, subset, lo, hi, probe_n, seed, device)
    return out

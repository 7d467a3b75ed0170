"""The evaluator: clean accuracy, a pruned eps sweep (PGD or APGD-CE, ``eval.sweep_attack``)
over an eps grid, expected robustness, AutoAttack (pyautoattack; torchattacks' as a second
opinion) at the target eps (``threat``) and sanity checks, written as one JSON evaluation
record (:mod:`rftbench.evaluation.records`).

It works on any model that maps [0,1] images (N,C,H,W) to logits (N, classes), also ones
rftbench did not train, on the device it is given; it never imports the trainer. The
evaluation subset is a fixed, seeded, class-stratified set of ``eval.n_samples`` indices of
the split in a round-robin order over classes (:func:`rftbench.data.stratified_subset_indices`);
AutoAttack covers its first ``eval.autoattack.n_samples``, the sanity probe its first
``eval.checks.probe_samples``, so both see every class. Batches stream, so memory stays flat as the subset grows;
AutoAttack runs in chunks of ``eval.autoattack.batch_size`` samples (a chunk is one
pyautoattack evaluation), so a sample's result depends only on its chunk.

Sharding (``shard=(i, N)``) evaluates one contiguous slice of the subset. Slices start at
multiples of one block (the least common multiple of the evaluation and AutoAttack batch
sizes), so every batch and chunk of a shard is one of the unsharded evaluation: merged shard
records hold exactly the numbers of an unsharded evaluation. An evaluation runs in those
blocks too, which makes it interruptible and resumable (``state_path``, :mod:`rftbench.evaluation.state`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..attacks.autoattack import check_autoattack_config, run_pyautoattack, run_torchattacks_autoattack
from ..attacks.pruned import input_gradients_only, naive_sweep, pruned_sweep, robust_at
from ..attacks.startable import predict
from ..attacks.sweep import SweepSettings
from ..config import ExperimentConfig
from ..data import class_counts, dataset_labels, eval_subset_indices, indices_sha256
from ..errors import ConfigError, RecordError
from .state import EvaluationInterrupted, read_state, write_state
from ..signals import StopRequest
from .metrics import expected_robustness, resolve_distribution
from .corruptions import CorruptionCache, check_unit_range
from .settings import measurement_settings
from .threat_measure import measure_block
from .threats import CorruptionThreat, aa_chunk_sizes, resolve_threats, threats_settings
from ..models import weights_sha256
from ..progress import ProgressService, Task, for_mode, format_eps
from .records import (EvaluationRecord, SampleResults, concat_samples, library_versions, merge_records, pack_array,
                      summarize, unpack_array)

__all__ = ["EvaluationRecord", "evaluate_model", "quick_robustness", "merge_records", "shard_range",
           "sweep_settings"]


def sweep_settings(cfg: ExperimentConfig) -> SweepSettings:
    """The eps-sweep attack of ``cfg.eval`` (``sweep_attack``, ``sweep_steps``, ...) in the threat
    model's norm (``cfg.threat``); random starts seeded from ``cfg.seed``."""
    ec = cfg.eval
    return SweepSettings(attack=ec.sweep_attack, norm=cfg.threat.norm, steps=ec.sweep_steps,
                         step_ratio=ec.step_size_ratio, restarts=ec.restarts, random_start=ec.random_start,
                         seed=cfg.seed)


def _batches(dataset: Dataset, indices: np.ndarray, batch_size: int, num_workers: int = 0,
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.ndarray]]:
    """(images, labels, dataset indices) of ``indices`` in order, ``batch_size`` at a time."""
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, num_workers=num_workers)
    for b, (x, y) in enumerate(loader):
        yield x, torch.as_tensor(y), indices[b * batch_size: b * batch_size + len(y)]


def quick_robustness(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, device: torch.device | str,
                     prefix: str = "val/") -> dict[str, float]:
    """Clean accuracy, accuracy under the sweep attack at the target eps (``{prefix}acc_pgd``, the
    name kept for the trainer's validation metrics) and ER on a small fixed subset."""
    was_training = model.training
    idx = eval_subset_indices(len(dataset), cfg.train.val_samples, cfg.seed, dataset_labels(dataset))
    grid = cfg.eps_grid()
    flags = pruned_sweep(model, _batches(dataset, idx, cfg.data.eval_batch_size), grid, sweep_settings(cfg), device)
    accs = flags.mean(0)
    model.train(was_training)
    return {f"{prefix}acc_clean": float(accs[0]), f"{prefix}acc_pgd": float(accs[-1]),
            f"{prefix}expected_robustness": expected_robustness(grid, accs, cfg.eval.distribution)}


# ---------------------------------------------------------------- shards (the --shard parser: config.parse_shard)
def shard_block(cfg: ExperimentConfig) -> int:
    """Shard boundaries are multiples of this many samples (see the module doc)."""
    bs = cfg.data.eval_batch_size
    return math.lcm(bs, cfg.eval.autoattack.batch_size, *aa_chunk_sizes(cfg)) if cfg.eval.autoattack.enabled else bs


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
    """What one evaluation (or shard) covers: subset positions [start, end) of ``subset``,
    AutoAttack on positions [0, n_aa), the probe on [0, probe_samples)."""

    subset: np.ndarray
    labels: np.ndarray | None  # of the split (None: the dataset does not say them; no stratification)
    start: int
    end: int
    run_aa: bool
    n_aa: int
    sweep: SweepSettings
    settings: dict[str, Any]
    shard: Optional[tuple[int, int]] = None
    threats: list = field(default_factory=list)  # eval.threats laid out (rftbench.evaluation.threats)
    cache: Optional[CorruptionCache] = None

    @property
    def mine(self) -> np.ndarray:
        return self.subset[self.start:self.end]

    def prefix(self, n: int) -> np.ndarray:
        """This shard's part of subset positions [0, n)."""
        return self.subset[self.start:max(self.start, min(self.end, n))]


def _settings(cfg: ExperimentConfig, sweep: SweepSettings, sample_shape: Sequence[int], run_aa: bool,
              n_aa: int) -> dict[str, Any]:
    """What the record states about how it was measured (also what shards must agree on)."""
    ec, th = cfg.eval, cfg.threat
    return measurement_settings(grid=cfg.eps_grid(), distribution=ec.distribution, sweep=sweep,
                                batch_size=cfg.data.eval_batch_size, norm=th.norm, eps=th.eps,
                                aa=ec.autoattack if run_aa else None, n_aa=n_aa, seed=cfg.seed, checks=ec.checks,
                                sample_shape=sample_shape)


def _plan(dataset: Dataset, cfg: ExperimentConfig, with_autoattack: bool | None,
          shard: tuple[int, int] | None) -> _Plan:
    """Validate the evaluation settings (before any work) and lay out what this run covers."""
    ec = cfg.eval
    resolve_distribution(ec.distribution)
    sweep = sweep_settings(cfg)
    run_aa = (ec.autoattack.enabled if with_autoattack is None else with_autoattack) and cfg.threat.eps > 0
    check_autoattack_config(ec.autoattack.version, ec.autoattack.attacks, running=run_aa,
                            second_opinion=ec.autoattack.second_opinion)
    labels = dataset_labels(dataset)
    subset = eval_subset_indices(len(dataset), ec.n_samples, ec.subset_seed, labels)
    n_total = len(subset)
    start, end = (0, n_total) if shard is None else shard_range(n_total, shard, shard_block(cfg))
    n_aa = min(ec.autoattack.n_samples, n_total) if run_aa else 0
    sample_shape = tuple(dataset[int(subset[0])][0].shape) if n_total else (1, 1, 1)
    plan = _Plan(subset, labels, start, end, run_aa, n_aa, sweep, _settings(cfg, sweep, sample_shape, run_aa, n_aa),
                 shard)
    if cfg.eval.threats:
        plan.threats, notes = resolve_threats(cfg, sample_shape, n_total, run_aa, plan.settings)
        plan.settings["threats"] = threats_settings(plan.threats, notes)
        if any(isinstance(t, CorruptionThreat) for t in plan.threats):
            plan.cache = CorruptionCache.default()
            if n_total:
                check_unit_range(torch.as_tensor(dataset[int(subset[0])][0]))
    return plan


def _part_info(plan: _Plan, n: int) -> dict[str, Any]:
    """The subset's first ``n`` positions: size, hash, classes covered, samples per class."""
    idx = plan.subset[:n]
    out: dict[str, Any] = {"n": int(len(idx)), "positions": [0, int(len(idx))], "indices_sha256": indices_sha256(idx)}
    if plan.labels is not None:
        per_class = class_counts(plan.labels[idx])
        split_classes = sorted(class_counts(plan.labels))
        out.update({"classes_covered": len(per_class), "classes_in_split": len(split_classes),
                    "missing_classes": [int(c) for c in split_classes if c not in per_class][:100],
                    "per_class": per_class})
    return out


def _subset_meta(cfg: ExperimentConfig, dataset: Dataset, plan: _Plan) -> dict[str, Any]:
    """The record's ``subset``: how the evaluation subset was drawn and its three parts."""
    ec, n_total = cfg.eval, len(plan.subset)
    probe = min(ec.checks.probe_samples, n_total)
    return {"seed": ec.subset_seed, "indices_sha256": indices_sha256(plan.subset),
            "n_requested": ec.n_samples, "size_of_split": len(dataset), "n_total": n_total,
            "designated_size": n_total, "stratified": plan.labels is not None,
            "order": ("class-stratified sample in a seeded round-robin order over classes: every prefix is "
                      "class-balanced" if plan.labels is not None else "seeded random sample in seeded random order "
                      "(the dataset does not expose its labels: not stratified)"),
            "parts": {"evaluation": _part_info(plan, n_total), "autoattack": _part_info(plan, plan.n_aa),
                      "probe": _part_info(plan, probe)}}


def _meta(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, plan: _Plan, dataset_name: str, split: str,
          shard: tuple[int, int] | None) -> dict[str, Any]:
    """The record's description of what was evaluated and how (see :func:`records.record_meta`)."""
    ec = cfg.eval
    return {
        "model": {"arch": getattr(model, "arch", None), "weights_sha256": weights_sha256(model),
                  "class": type(model).__name__},
        "dataset": dataset_name, "split": split,
        "subset": _subset_meta(cfg, dataset, plan),
        "shard": None if shard is None else {"index": shard[0], "count": shard[1], "positions": [plan.start, plan.end],
                                             "block": shard_block(cfg)},
        "threat_model": {"norm": cfg.threat.norm, "target_eps": cfg.threat.eps},
        "settings": plan.settings,
        "seeds": {"experiment": cfg.seed, "subset": ec.subset_seed, "sweep_starts": cfg.seed,
                  "autoattack": cfg.seed if plan.run_aa else None},
        "versions": library_versions(),
    }


def _sweep_keeping_labels(model: nn.Module, batches, cfg: ExperimentConfig, plan: _Plan, device,
                          on_eps=None) -> tuple[np.ndarray, np.ndarray]:
    """The pruned sweep's flags (n, len(grid)) over ``batches`` and the labels it saw (n,)."""
    labels: list[np.ndarray] = []

    def keeping_labels(stream):
        for x, y, idx in stream:
            labels.append(y.numpy())
            yield x, y, idx

    flags = pruned_sweep(model, keeping_labels(batches), cfg.eps_grid(), plan.sweep, device, on_eps=on_eps)
    return flags, (np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64))


def _n_batches(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def _eps_progress(task: Task, grid: Sequence[float], norm: str, n_batches: int):
    """The pruned sweep's ``on_eps`` hook showing ``batch 1/2 eps 3/4 = 8/255: 40/64 robust``."""
    def on_eps(b: int, j: int, eps: float, robust: int, n: int) -> None:
        where = f"eps {j}/{len(grid) - 1} = {format_eps(eps, norm)}: {robust}/{n} robust" if j else \
            f"clean: {robust}/{n} correct"
        task.update(advance=1, detail=f"batch {b + 1}/{n_batches} {where}")
    return on_eps


def _shown_if(svc: ProgressService, n_samples: int) -> ProgressService:
    """``svc``, or a silent service for a phase with no samples (no "checks probe: 0 samples" line)."""
    return svc if n_samples else ProgressService("off")


def _clean_again(model: nn.Module, batches, device) -> np.ndarray:
    """Per-sample clean correctness from a second pass (bool, n)."""
    parts = [(predict(model, x.to(device)) == y.to(device)).cpu().numpy() for x, y, _ in batches]
    return np.concatenate(parts) if parts else np.zeros(0, bool)


def _measure_block(model: nn.Module, batches, cfg: ExperimentConfig, plan: _Plan, lo: int, hi: int, device,
                   timings: dict[str, float], svc: ProgressService) -> tuple[SampleResults, np.ndarray]:
    """Every measurement on subset positions [lo, hi) (one block): its per-sample results and
    the clean correctness of a second pass (each shown as a task of ``svc``)."""
    ec, grid, bs = cfg.eval, cfg.eps_grid(), cfg.data.eval_batch_size

    def clock(key: str, t: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t

    idx = plan.subset[lo:hi]
    t = time.perf_counter()
    with svc.task("sweep", _n_batches(len(idx), bs) * len(grid), detail=f"{len(idx)} samples") as task:
        hook = _eps_progress(task, grid, plan.sweep.norm, _n_batches(len(idx), bs))
        flags, labels = _sweep_keeping_labels(model, batches(idx), cfg, plan, device, hook)
    clock("sweep_s", t)
    # clean results again (a randomized or stateful model does not reproduce)
    t = time.perf_counter()
    with svc.task("clean recheck", _n_batches(len(idx), bs), unit="batch") as task:
        clean_again = _clean_again(model, task.track(batches(idx)), device)
    clock("clean_recheck_s", t)
    # the sanity probe on positions [0, probe_samples): a naive sweep and the attack at a very large eps
    t = time.perf_counter()
    probe_idx = plan.subset[lo:max(lo, min(hi, ec.checks.probe_samples))]
    with _shown_if(svc, len(probe_idx)).task("checks probe", 2 * _n_batches(len(probe_idx), bs), unit="batch",
                  detail=f"{len(probe_idx)} samples: naive sweep, then eps "
                  f"{format_eps(plan.settings['checks']['large_eps'], cfg.threat.norm)}"
                  ) as task:
        probe_raw = naive_sweep(model, task.track(batches(probe_idx)), grid, plan.sweep, device)
        probe_large = robust_at(model, task.track(batches(probe_idx)), plan.settings["checks"]["large_eps"],
                                plan.sweep.for_large_eps(), device) & probe_raw[:, 0]
    clock("sanity_probe_s", t)
    # AutoAttack on positions [0, n_aa), in chunks
    aa_idx = plan.subset[lo:max(lo, min(hi, plan.n_aa))]
    with _shown_if(svc, len(aa_idx)).task("autoattack", _n_batches(len(aa_idx), ec.autoattack.batch_size), unit="chunk",
                  detail=f"{len(aa_idx)} samples at eps {format_eps(cfg.threat.eps, cfg.threat.norm)}") as task:
        aa = _autoattack(model, batches(aa_idx, ec.autoattack.batch_size), cfg, device, timings, task)
    res = SampleResults(start=lo, indices=idx.astype(np.int64), labels=labels, sweep_flags=flags,
                        probe_raw=probe_raw, probe_large=probe_large,
                        clean_recheck_mismatch=int(np.sum(clean_again != flags[:, 0])), **aa)
    if plan.threats:
        t = time.perf_counter()
        with svc.task("threats", len(plan.threats), detail=", ".join(t.key for t in plan.threats)):
            res.threats = measure_block(model, batches, plan.threats, plan.subset, lo, hi, ec.checks.probe_samples,
                                        cfg.seed, plan.cache, device)
        clock("threats_s", t)
    return res, clean_again


def _block_ranges(plan: _Plan, block: int) -> list[tuple[int, int]]:
    """This run's positions [start, end) cut into blocks at multiples of ``block``."""
    return [(b, min(b + block, plan.end)) for b in range(plan.start, plan.end, block)] or [(plan.start, plan.start)]


def _measure(model: nn.Module, batches, cfg: ExperimentConfig, plan: _Plan, device, timings: dict[str, float],
             reference: EvaluationRecord | None, state: "_State") -> SampleResults:
    """Run every measurement block by block (skipping blocks the state holds), saving the
    state after each block and stopping at a block boundary when a signal asked for it."""
    ranges = _block_ranges(plan, shard_block(cfg))
    done = state.load(timings)
    svc = state.progress or for_mode("off")
    with svc.task(_title(plan), len(ranges), unit="block", detail=_scope(plan, len(done))) as task, \
            StopRequest("evaluation", enabled=state.path is not None,
                        safe_point=lambda: _safe_point(len(done), len(ranges))) as guard:
        task.update(len(done))
        for k, (lo, hi) in enumerate(ranges):
            if k < len(done):
                continue
            done.append(_measure_block(model, batches, cfg, plan, lo, hi, device, timings, svc))
            state.save(done, timings)
            task.update(k + 1, detail=f"{hi - plan.start}/{plan.end - plan.start} samples done")
            if state.on_block is not None:
                state.on_block(k + 1, len(ranges))
            if guard.requested and k + 1 < len(ranges):
                raise EvaluationInterrupted(
                    f"{guard.requested} received: evaluation stopped after {k + 1} of {len(ranges)} blocks, saved in "
                    f"{state.path}; resume with `rftbench evaluate CONFIG --resume` (or `rftbench train CONFIG "
                    f"--resume RUN_ID`).")
    samples = concat_samples([r for r, _ in done])
    samples.start = plan.start
    clean_again = np.concatenate([c for _, c in done])
    samples.reference = None if reference is None else _compare_reference(reference, plan, clean_again, model)
    return samples


def _title(plan: _Plan) -> str:
    """``evaluation``, or ``evaluation shard 1/4`` (0-based, as ``--shard`` writes it)."""
    return "evaluation" + (f" shard {plan.shard[0]}/{plan.shard[1]}" if plan.shard else "")


def _scope(plan: _Plan, n_done: int) -> str:
    """``24 samples, 16 under AutoAttack (resumed after 1 block)``."""
    aa = f", {plan.n_aa} under AutoAttack" if plan.run_aa else ""
    again = f" (resumed after {n_done} block{'s' if n_done != 1 else ''})" if n_done else ""
    return f"{plan.end - plan.start} samples{aa}{again}"


def _safe_point(n_done: int, n_blocks: int) -> str:
    """Where a signal received while block ``n_done + 1`` runs stops the evaluation."""
    if n_done + 1 >= n_blocks:
        return f"when its last block ({n_blocks} of {n_blocks}) ends"
    return f"after block {n_done + 1} of {n_blocks}"


@dataclass
class _State:
    """The resumable state of one evaluation: finished blocks, kept in ``path`` (None: not kept);
    ``progress`` shows its blocks (None: nothing)."""

    path: Any
    fingerprint: dict[str, Any]
    on_block: Any = None
    progress: Optional[ProgressService] = None
    t0: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0  # seconds the saved blocks took

    def load(self, timings: dict[str, float]) -> list[tuple[SampleResults, np.ndarray]]:
        if self.path is None:
            return []
        blocks, saved_timings = read_state(self.path, self.fingerprint)
        self.elapsed_before = float(saved_timings.pop("elapsed_s", 0.0))
        timings.update(saved_timings)
        return [(SampleResults.from_json(b["samples"]), unpack_array(b["clean_again"])) for b in blocks]

    def save(self, done: list[tuple[SampleResults, np.ndarray]], timings: dict[str, float]) -> None:
        if self.path is not None:
            elapsed = self.elapsed_before + time.perf_counter() - self.t0
            write_state(self.path, self.fingerprint, [{"samples": r.to_json(), "clean_again": pack_array(c)}
                                                      for r, c in done], {**timings, "elapsed_s": elapsed})


def evaluate_model(model: nn.Module, dataset: Dataset, cfg: ExperimentConfig, *, device: torch.device | str,
                   dataset_name: str, split: str, with_autoattack: bool | None = None,
                   shard: tuple[int, int] | None = None,
                   reference: EvaluationRecord | None = None, state_path: str | Path | None = None,
                   on_block: Callable[[int, int], None] | None = None) -> EvaluationRecord:
    """Evaluate ``model`` (on ``device``) on the fixed seeded subset of ``dataset`` (the ``split`` of
    ``dataset_name``) as ``cfg.eval`` says, in the threat model ``cfg.threat``; ``shard=(i, N)``
    evaluates slice i of N (merge with :func:`merge_records`).

    ``reference``: a stored record of this model on this subset; its per-sample clean results
    must reproduce (check ``clean_reproduces_reference``). ``state_path``: keep the finished
    blocks there (and continue after those it holds); SIGTERM / SIGINT then stop at the next
    block boundary with :class:`~rftbench.evaluation.state.EvaluationInterrupted`; the file is removed
    when the evaluation completes. ``on_block(done, total)`` is called after each block.

    Progress (blocks, shard, sweep eps points, the checks probe, AutoAttack chunks with the samples
    left robust after each attack) goes to stderr through :mod:`rftbench.progress` in the mode of
    ``cfg.train.progress`` (``off``: nothing); it never changes the record.
    """
    t0 = time.perf_counter()
    plan = _plan(dataset, cfg, with_autoattack, shard)

    def batches(idx: np.ndarray, size: int = cfg.data.eval_batch_size):
        return _batches(dataset, idx, size, cfg.data.num_workers)

    timings: dict[str, float] = {}
    model.eval()
    meta = _meta(model, dataset, cfg, plan, dataset_name, split, shard)
    path = None if state_path is None else Path(state_path)
    fingerprint = {k: meta[k] for k in ("model", "dataset", "split", "subset", "shard", "threat_model", "settings",
                                        "seeds")}
    state = _State(path, fingerprint, on_block, for_mode(cfg.train.progress), t0)
    with input_gradients_only(model):
        samples = _measure(model, batches, cfg, plan, device, timings, reference, state)
    timings["total_s"] = state.elapsed_before + time.perf_counter() - t0
    record = summarize(meta, samples, timings)
    if path is not None:
        path.unlink(missing_ok=True)
    return record


def _autoattack(model: nn.Module, chunks, cfg: ExperimentConfig, device, timings: dict[str, float],
                task: Task) -> dict[str, Any]:
    """pyautoattack (and torchattacks' AutoAttack when asked) on each chunk; the SampleResults
    fields. ``task`` shows each chunk and the samples left robust after each attack."""
    ec, th = cfg.eval, cfg.threat
    second = ec.autoattack.second_opinion
    out: dict[str, Any] = {"aa_broken_by": np.zeros(0, np.uint8), "ta_flags": None, "aa_attacks": [],
                           "aa_n_target_classes": None, "aa_library_warnings": []}
    parts, ta_parts = [], []
    t_aa = t_ta = 0.0
    num_classes = None
    for c, (x, y, _) in enumerate(chunks):
        x, y = x.to(device), y.to(device)
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(x[:1]).shape[1])
        t = time.perf_counter()

        def on_attack(k: int, n_attacks: int, name: str, left: int, c=c, n=len(y)) -> None:
            task.update(detail=f"chunk {c + 1}/{task.total} {name} ({k + 1}/{n_attacks}): {left}/{n} left robust")

        res = run_pyautoattack(model, x, y, eps=th.eps, norm=th.norm, version=ec.autoattack.version,
                               num_classes=num_classes, seed=cfg.seed, batch_size=ec.autoattack.batch_size,
                               attacks=ec.autoattack.attacks or None, device=device, on_attack=on_attack)
        t_aa += time.perf_counter() - t
        parts.append(res.broken_by)
        out["aa_attacks"], out["aa_n_target_classes"] = res.attacks, res.n_target_classes
        out["aa_library_warnings"] += [m for m in res.library_warnings if m not in out["aa_library_warnings"]]
        if second:
            task.update(detail=f"chunk {c + 1}/{task.total} torchattacks' AutoAttack (second opinion)")
            t = time.perf_counter()
            ta_parts.append(run_torchattacks_autoattack(model, x, y, eps=th.eps, norm=th.norm,
                                                        version=ec.autoattack.version, num_classes=num_classes,
                                                        seed=cfg.seed))
            t_ta += time.perf_counter() - t
        task.update(advance=1)
    if second:
        out["ta_flags"] = np.concatenate(ta_parts) if ta_parts else np.zeros(0, bool)
    if parts:
        out["aa_broken_by"] = np.concatenate(parts)
        timings["autoattack_s"] = timings.get("autoattack_s", 0.0) + t_aa
        if second:
            timings["autoattack_torchattacks_s"] = timings.get("autoattack_torchattacks_s", 0.0) + t_ta
    return out


def _compare_reference(reference: EvaluationRecord, plan: _Plan, clean_now: np.ndarray,
                       model: nn.Module) -> dict[str, Any]:
    """Per-sample clean results now vs those stored in ``reference`` (same subset required)."""
    ref = reference.data
    if ref["subset"]["indices_sha256"] != indices_sha256(plan.subset):
        raise RecordError("the reference record evaluated another subset of samples (its subset hash differs); "
                          "evaluate with the same eval.n_samples and eval.subset_seed as the reference.")
    rs = reference.samples()
    # the reference may be a shard: compare where both hold the sample
    start, end = plan.start, plan.end
    lo, hi = max(start, rs.start), min(end, rs.start + rs.n)
    if lo >= hi:
        raise RecordError("the reference record holds none of the samples of this evaluation (another shard?).")
    stored = rs.sweep_flags[lo - rs.start:hi - rs.start, 0]
    now = clean_now[lo - start:hi - start]
    same_weights = ref["model"]["weights_sha256"] == weights_sha256(model)
    return {"mismatch": int(np.sum(stored != now)), "n": int(hi - lo),
            "against": "the reference record" + ("" if same_weights else " (whose weights sha256 differs)"),
            "stored_clean_accuracy": ref["clean_accuracy"]}

"""The evaluation record: one JSON document per evaluation, built from per-sample results.

Every number in a record (accuracies, ER, AutoAttack, checks, ``certified``) is computed by
:func:`summarize` from the per-sample arrays stored in the record itself, so shard records
merge (:func:`merge_records`) into a record whose numbers are those of an unsharded
evaluation, and anyone can re-check a record from its per-sample results.

Per-sample arrays are stored compressed: ``{"dtype", "shape", "data"}`` with ``data`` =
base64(gzip(bytes)); booleans are bit-packed first.

Format 3 (the sweep attack configurable): the curve lives under ``sweep`` (with the attack's
name and settings), per-sample flags under ``sweep_flags``. Records of format 2 (key ``pgd``)
are refused with a message: re-evaluate the model to get a format-3 record.
"""
from __future__ import annotations

import base64
import binascii
import copy
import gzip
import json
import math
import platform
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import __version__
from ..attacks.sweep import describe_sweep
from .checks import (CheckResult, check_autoattack_vs_pgd, check_clean_reproduces, check_large_eps,
                     check_monotone, check_square, check_sweep_vs_autoattack)
from ..errors import RecordError
from .metrics import er_name, expected_robustness
from .threat_records import concat_threats, summarize_threats, threat_metrics

__all__ = ["RECORD_FORMAT", "EvaluationRecord", "RecordError", "SampleResults", "library_versions", "merge_records",
           "pack_array", "record_meta", "summarize", "unpack_array"]

RECORD_FORMAT = 3
_ARRAYS = ("indices", "labels", "sweep_flags", "aa_broken_by", "ta_flags", "probe_raw", "probe_large")
# what each per-sample array holds: numpy dtype kinds and number of dimensions
_ARRAY_KINDS = {"indices": ("iu", 1), "labels": ("iu", 1), "sweep_flags": ("b", 2), "aa_broken_by": ("iu", 1),
                "ta_flags": ("b", 1), "probe_raw": ("b", 2), "probe_large": ("b", 1)}
# arrays whose length must equal (==) or not exceed (<=) another's
_ARRAY_LENGTHS = (("labels", "==", "indices"), ("sweep_flags", "==", "indices"), ("aa_broken_by", "<=", "indices"),
                  ("ta_flags", "==", "aa_broken_by"), ("probe_large", "<=", "indices"),
                  ("probe_raw", "==", "probe_large"))


# ---------------------------------------------------------------- compressed arrays
def pack_array(a: np.ndarray) -> dict[str, Any]:
    """A numpy array as ``{"dtype", "shape", "data": base64(gzip(bytes))}`` (bools bit-packed)."""
    a = np.asarray(a)
    if a.dtype == bool:
        raw = np.packbits(a, axis=None).tobytes()
        dtype = "bool"
    else:
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        raw = a.tobytes()
        dtype = a.dtype.str
    return {"dtype": dtype, "shape": list(a.shape), "data": base64.b64encode(gzip.compress(raw, mtime=0)).decode()}


def _packed_dtype(dtype: Any, what: str) -> np.dtype | None:
    """The numeric dtype a packed array names (None: bit-packed bools)."""
    if dtype == "bool":
        return None
    try:
        dt = np.dtype(dtype) if isinstance(dtype, str) else None
    except TypeError:
        dt = None
    if dt is None or dt.kind not in "biufc" or dt.fields is not None:
        raise RecordError(f"{what} has dtype {dtype!r}, which is not a numeric one (rftbench packs bool, "
                          f"int, uint and float arrays only).")
    return dt


def _packed_shape(shape: Any, what: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(k) is int and k >= 0 for k in shape):
        raise RecordError(f"{what} has shape {shape!r}, which is not a list of non-negative integers.")
    return tuple(shape)


def _packed_bytes(data: Any, what: str) -> bytes:
    try:
        if not isinstance(data, str):
            raise TypeError(f"data is a {type(data).__name__}, not a string")
        return gzip.decompress(base64.b64decode(data, validate=True))
    except (TypeError, binascii.Error, OSError, EOFError, zlib.error) as exc:
        raise RecordError(f"{what} has data that is not base64 of gzip ({type(exc).__name__}: {exc}).") from None


def unpack_array(d: dict[str, Any], what: str = "a packed array") -> np.ndarray:
    """The numpy array :func:`pack_array` packed into ``d``. :class:`RecordError` naming ``what``
    when ``d`` is not such a packed numeric array (fields, dtype, shape, base64/gzip, byte count)."""
    if not isinstance(d, dict) or not {"dtype", "shape", "data"} <= d.keys():
        raise RecordError(f"{what} is not a packed array (a JSON object with dtype, shape and data).")
    dtype, shape = _packed_dtype(d["dtype"], what), _packed_shape(d["shape"], what)
    raw = _packed_bytes(d["data"], what)
    n = math.prod(shape)
    want = (n + 7) // 8 if dtype is None else n * dtype.itemsize
    if len(raw) != want:
        raise RecordError(f"{what} holds {len(raw)} bytes of data where its dtype {d['dtype']!r} and shape "
                          f"{list(shape)} need {want}.")
    if dtype is None:
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:n].reshape(shape).astype(bool)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "rftbench": __version__}
    for name in ("torch", "torchvision", "torchattacks", "pyautoattack", "timm", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


# ---------------------------------------------------------------- per-sample results
@dataclass
class SampleResults:
    """What one evaluation (or shard) measured, per sample, in subset order.

    ``start``: position of the first sample in the full evaluation subset. AutoAttack covers
    the first ``len(aa_broken_by)`` samples here, the probe the first ``len(probe_large)``.
    """

    start: int
    indices: np.ndarray            # int64 (n,): indices into the split
    labels: np.ndarray             # int64 (n,)
    sweep_flags: np.ndarray        # bool (n, len(grid)): pruned sweep, column 0 = clean
    aa_broken_by: np.ndarray       # uint8 (n_aa,): 0 robust, 1 clean wrong, 2+k broken by attack k
    ta_flags: np.ndarray | None    # bool (n_aa,): torchattacks' AutoAttack, or None
    probe_raw: np.ndarray          # bool (n_probe, len(grid)): naive sweep, no nesting
    probe_large: np.ndarray        # bool (n_probe,): the sweep attack at the very large eps
    clean_recheck_mismatch: int = 0
    reference: dict[str, Any] | None = None   # {"mismatch", "n", "against"}
    aa_attacks: list[str] = field(default_factory=list)
    aa_n_target_classes: int | None = None
    aa_library_warnings: list[str] = field(default_factory=list)
    # eval.threats: per threat key, its per-sample arrays and AutoAttack facts (None: no eval.threats)
    threats: dict[str, dict[str, Any]] | None = None

    @property
    def n(self) -> int:
        return int(len(self.indices))

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "clean_recheck_mismatch": int(self.clean_recheck_mismatch),
                             "reference": self.reference, "aa_attacks": list(self.aa_attacks),
                             "aa_n_target_classes": self.aa_n_target_classes,
                             "aa_library_warnings": list(self.aa_library_warnings)}
        for name in _ARRAYS:
            v = getattr(self, name)
            d[name] = None if v is None else pack_array(v)
        if self.threats is not None:
            d["threats"] = {k: {f: pack_array(v) if isinstance(v, np.ndarray) else v for f, v in part.items()}
                            for k, part in self.threats.items()}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SampleResults":
        """The per-sample results :meth:`to_json` wrote; :class:`RecordError` naming the field
        when one is malformed (an array that is not a packed numeric array of its kind, ...)."""
        if not isinstance(d, dict):
            raise RecordError(f"per_sample is a {type(d).__name__}, not a JSON object.")
        arrays = {k: (None if d.get(k) is None else unpack_array(d[k], f"per_sample field {k!r}"))
                  for k in _ARRAYS}
        _check_arrays(arrays)
        return cls(start=_scalar(d, "start", int), clean_recheck_mismatch=_scalar(d, "clean_recheck_mismatch", int, 0),
                   reference=d.get("reference"), aa_attacks=_scalar(d, "aa_attacks", list, []),
                   aa_n_target_classes=d.get("aa_n_target_classes"),
                   aa_library_warnings=_scalar(d, "aa_library_warnings", list, []),
                   threats=_threats_from_json(d.get("threats")), **arrays)


_REQUIRED = object()


def _threats_from_json(d: Any) -> dict[str, dict[str, Any]] | None:
    """The per-threat part of ``per_sample`` (packed arrays unpacked)."""
    if d is None:
        return None
    if not isinstance(d, dict) or not all(isinstance(p, dict) for p in d.values()):
        raise RecordError("per_sample field 'threats' is not a JSON object of threats.")
    return {k: {f: unpack_array(v, f"per_sample threat {k!r} field {f!r}")
                if isinstance(v, dict) and "dtype" in v else v for f, v in part.items()} for k, part in d.items()}


def _scalar(d: dict[str, Any], key: str, convert: Any, default: Any = _REQUIRED) -> Any:
    """``convert(d[key])`` (``default`` when absent, if given); :class:`RecordError` naming the field."""
    try:
        return convert(d[key] if default is _REQUIRED else d.get(key, default))
    except (KeyError, TypeError, ValueError) as exc:
        what = "is missing" if isinstance(exc, KeyError) else f"is malformed ({type(exc).__name__}: {exc})"
        raise RecordError(f"per_sample field {key!r} {what}.") from None


def _check_arrays(arrays: dict[str, np.ndarray | None]) -> None:
    """:class:`RecordError` unless each per-sample array has its kind, dimensions and length."""
    for name, (kinds, ndim) in _ARRAY_KINDS.items():
        a = arrays[name]
        if a is None and name != "ta_flags":
            raise RecordError(f"per_sample field {name!r} is missing.")
        if a is not None and (a.dtype.kind not in kinds or a.ndim != ndim):
            raise RecordError(f"per_sample field {name!r} is a {a.ndim}-d {a.dtype} array; it should be "
                              f"{ndim}-d of kind {kinds!r} (numpy dtype kind).")
    for name, rel, other in _ARRAY_LENGTHS:
        a, b = arrays[name], arrays[other]
        if a is not None and b is not None and not (len(a) == len(b) if rel == "==" else len(a) <= len(b)):
            raise RecordError(f"per_sample field {name!r} has {len(a)} rows where {other!r} has {len(b)}.")


# ---------------------------------------------------------------- the record
@dataclass
class EvaluationRecord:
    """Everything one evaluation measured, with what it takes to reproduce and re-check it."""

    data: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, k: str) -> Any:
        return self.data[k]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)

    def save(self, path: str | Path) -> Path:
        from ..atomic import atomic_write_text

        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "EvaluationRecord":
        p = Path(path)
        if not p.is_file():
            raise RecordError(f"evaluation record {str(path)!r} does not exist.")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise RecordError(f"{p} is not a JSON evaluation record: {exc}.") from None
        fmt = data.get("rftbench_record") if isinstance(data, dict) else None
        if fmt == 2:
            raise RecordError(f"{p} is an evaluation record of format 2 (PGD sweep under the key 'pgd'), written "
                              f"before the sweep attack became configurable; this rftbench reads format "
                              f"{RECORD_FORMAT} (key 'sweep'). Re-evaluate the model: rftbench evaluate CONFIG "
                              f"--out FILE (eval.sweep_attack: pgd gives the same numbers).")
        if fmt != RECORD_FORMAT or "per_sample" not in data:
            raise RecordError(f"{p} is not an rftbench evaluation record of format {RECORD_FORMAT} "
                              f"(write it with `rftbench evaluate ... --out FILE`).")
        record = cls(data)
        try:
            record.samples()
        except RecordError as exc:
            raise RecordError(f"evaluation record {p} is malformed: {exc} It was edited, truncated or not written "
                              f"by rftbench: write it again with `rftbench evaluate CONFIG --out FILE`.") from None
        return record

    def samples(self) -> SampleResults:
        """The per-sample results, decompressed."""
        return SampleResults.from_json(self.data["per_sample"])

    def metrics(self) -> dict[str, float]:
        """The record's numbers under their MLflow metric names: ``eval/acc_clean``,
        ``eval/acc_sweep`` (the sweep attack at the grid's last eps), ``eval/acc_sweep_eps_<x>_255``
        per grid point, ``eval/expected_robustness``, ``eval/acc_autoattack`` ..."""
        d = self.data
        out = {"eval/acc_clean": d["clean_accuracy"], "eval/acc_sweep": d["sweep"]["accuracy"][-1],
               "eval/expected_robustness": d["expected_robustness"]["value"]}
        if d.get("autoattack"):
            out["eval/acc_autoattack"] = d["autoattack"]["accuracy"]
            if d["autoattack"].get("torchattacks"):
                out["eval/acc_autoattack_torchattacks"] = d["autoattack"]["torchattacks"]["accuracy"]
        for e, a in zip(d["sweep"]["eps_grid"], d["sweep"]["accuracy"]):
            out[f"eval/acc_sweep_eps_{e * 255:.2f}_255"] = a
        out["eval/n_samples"] = d["n_samples"]
        out["eval/n_warnings"] = len(d["warnings"])
        out["eval/time_s"] = d["timings"]["total_s"]
        if d.get("threats"):
            out.update(threat_metrics(d["threats"]))
        return out


def _aa_summary(aa_settings: dict[str, Any], s: SampleResults, sweep_flags_aa: np.ndarray,
                sweep_eps: float) -> dict[str, Any]:
    bb = s.aa_broken_by
    n = int(len(bb))
    acc_after = {}
    for k, name in enumerate(s.aa_attacks):
        acc_after[name] = float(np.mean((bb == 0) | (bb > 2 + k))) if n else float("nan")
    out = {**aa_settings, "attacks": list(s.aa_attacks), "n_samples": n,
           "accuracy": float(np.mean(bb == 0)) if n else float("nan"),
           "clean_accuracy": float(np.mean(bb != 1)) if n else float("nan"),
           "accuracy_after": acc_after, "broken_by": {name: int(np.sum(bb == 2 + k)) for k, name in
                                                      enumerate(s.aa_attacks)},
           "n_target_classes": s.aa_n_target_classes,
           "sweep_same_samples": {"eps": sweep_eps,
                                  "accuracy": float(sweep_flags_aa.mean()) if n else float("nan")},
           "library_warnings": list(s.aa_library_warnings), "torchattacks": None}
    if s.ta_flags is not None:
        ta = s.ta_flags
        out["torchattacks"] = {"library": "torchattacks", "version": aa_settings["version"],
                               "accuracy": float(ta.mean()) if n else float("nan"),
                               "disagreements": int(np.sum(ta != (bb == 0)))}
    return out


def _autoattack_part(meta: dict[str, Any], s: SampleResults, grid: list[float], attack: str,
                     ) -> tuple[dict[str, Any] | None, bool, list[CheckResult]]:
    """AutoAttack's summary, ``certified`` and its two checks (against the sweep, Square)."""
    st, target = meta["settings"], meta["threat_model"]["target_eps"]
    aa_st = st.get("autoattack")
    if aa_st is None or not len(s.aa_broken_by):
        return None, False, [check_autoattack_vs_pgd(np.zeros(0, bool), np.zeros(0, bool), target, target),
                             check_sweep_vs_autoattack(np.zeros(0, bool), np.zeros(0, bool), target, 0.0),
                             check_square(0, 0)]
    n_aa, aa_eps = len(s.aa_broken_by), aa_st["eps"]
    j = max(i for i, e in enumerate(grid) if e <= aa_eps + 1e-12)
    aa = _aa_summary(aa_st, s, s.sweep_flags[:n_aa, j], grid[j])
    checks = [check_autoattack_vs_pgd(s.aa_broken_by == 0, s.sweep_flags[:n_aa, j], aa_eps, grid[j], attack),
              check_sweep_vs_autoattack(s.aa_broken_by == 0, s.sweep_flags[:n_aa, j], grid[j],
                                        st["checks"].get("sweep_vs_autoattack_max_gap", 0.2), attack)]
    if "square" in s.aa_attacks:
        k = s.aa_attacks.index("square")
        checks.append(check_square(int(np.sum(s.aa_broken_by == 2 + k)), n_aa, st["checks"]["square_tolerance"],
                                   f"pyautoattack {aa_st['version']}"))
    else:
        checks.append(check_square(0, 0))
    full = meta["shard"] is None and n_aa == meta["subset"]["n_total"] == meta["subset"]["designated_size"]
    certified = bool(aa_st["version"] == "standard" and meta["split"] == "test" and full
                     and np.isclose(aa_eps, target))
    return aa, certified, checks


def _clean_checks(s: SampleResults) -> list[CheckResult]:
    """Clean results reproduce: a second pass, and against a stored record when one was given."""
    checks = [check_clean_reproduces(s.clean_recheck_mismatch, s.n, "a second clean pass")]
    if s.reference is not None:
        ref = s.reference
        r = check_clean_reproduces(ref["mismatch"], ref["n"], ref["against"])
        r.name = "clean_reproduces_reference"
        if ref.get("stored_clean_accuracy") is not None:
            r.values["stored_clean_accuracy"] = ref["stored_clean_accuracy"]
        checks.append(r)
    return checks


def _subsets_used(meta: dict[str, Any]) -> dict[str, Any]:
    """Which subset each number used: the evaluation subset (clean, sweep, ER, clean
    re-check), AutoAttack's prefix (AutoAttack and its checks), the probe's prefix (monotone,
    large_eps); each with its hash, classes covered and samples per class (from ``meta``)."""
    sub = meta["subset"]
    used = {"evaluation": ["clean_accuracy", "sweep", "expected_robustness", "checks.clean_reproduces"],
            "autoattack": ["autoattack", "checks.autoattack_vs_pgd", "checks.sweep_vs_autoattack",
                           "checks.square_vs_whitebox"],
            "probe": ["checks.monotone", "checks.large_eps"]}
    parts = sub.get("parts") or {}
    return {name: {**copy.deepcopy(parts.get(name, {})), "used_by": used[name]} for name in used}


def threat_numbers(meta: dict[str, Any], s: SampleResults, clean_checks: bool = True) -> dict[str, Any]:
    """One threat's numbers from ``meta`` (its ``settings`` and ``threat_model``) and per-sample
    results: clean accuracy, curve, ER, AutoAttack, checks, warnings, ``certified`` / ``flagged``.
    ``clean_checks``: include the clean re-checks (the training threat's; a property of the model)."""
    st = meta["settings"]
    grid, dist, sweep = list(st["eps_grid"]), st["distribution"], dict(st["sweep"])
    accs = s.sweep_flags.mean(0).tolist() if s.n else [float("nan")] * len(grid)
    er = expected_robustness(grid, accs, dist) if s.n else float("nan")
    attack = describe_sweep(sweep)
    cs = st["checks"]
    checks = [check_monotone(grid, s.probe_raw, cs["monotone_tolerance"], attack),
              check_large_eps(s.probe_large, cs["large_eps"], cs["large_eps_max_accuracy"])]
    aa, certified, aa_checks = _autoattack_part(meta, s, grid, attack)
    checks += aa_checks + (_clean_checks(s) if clean_checks else [])
    flagged = any(c.passed is False for c in checks)
    library_warnings = aa["library_warnings"] if aa else []
    return {"clean_accuracy": accs[0],
            "sweep": {"eps_grid": grid, "accuracy": accs, **sweep, "pruned": True},
            "expected_robustness": {"value": er, "distribution": dist, "eps_max": grid[-1],
                                    "name": er_name(grid, dist, attack), "attack": attack, "grid": grid},
            "autoattack": aa,
            # certified: AutoAttack standard on the whole designated subset at the target eps AND no check failed
            "certified": bool(certified and not flagged), "flagged": flagged,
            "checks": {c.name: c.to_dict() for c in checks},
            "warnings": [c.warning for c in checks if c.warning] + [f"pyautoattack: {m}" for m in library_warnings]}


def summarize(meta: dict[str, Any], s: SampleResults, timings: dict[str, Any]) -> EvaluationRecord:
    """The full record (numbers, checks, warnings, ``certified``) from ``meta`` and per-sample results.

    A pure function of its inputs: an unsharded evaluation and a merge of its shards give the
    same numbers. With ``settings.threats`` the record also holds ``threats``
    (:func:`rftbench.evaluation.threat_records.summarize_threats`).
    """
    st = meta["settings"]
    num = threat_numbers(meta, s)
    record: dict[str, Any] = {
        "rftbench_record": RECORD_FORMAT,
        **{k: copy.deepcopy(meta[k]) for k in ("model", "dataset", "split", "subset", "shard", "threat_model")},
        "n_samples": s.n,
        **{k: num[k] for k in ("clean_accuracy", "sweep", "expected_robustness", "autoattack", "certified",
                               "flagged")},
        "subsets": _subsets_used(meta),
        "checks": num["checks"],
        "seeds": copy.deepcopy(meta["seeds"]),
        "versions": copy.deepcopy(meta["versions"]),
        "settings": copy.deepcopy(st),
        "warnings": num["warnings"],
        "per_sample": s.to_json(),
        "timings": dict(timings),
    }
    if "threats" in st:
        record["threats"] = summarize_threats(meta, s, num, threat_numbers)
        record["warnings"] += record["threats"]["warnings"]
    record["timings"].setdefault("total_s", float(sum(v for k, v in timings.items() if k.endswith("_s"))))
    return EvaluationRecord(json.loads(json.dumps(record)))  # plain JSON types: equal to the saved record


def record_meta(record: EvaluationRecord) -> dict[str, Any]:
    """The parts of a record that describe what was evaluated and how (not what came out)."""
    d = record.data
    return {k: copy.deepcopy(d[k]) for k in ("model", "dataset", "split", "subset", "shard", "threat_model",
                                             "settings", "seeds", "versions")}


# ---------------------------------------------------------------- merging shards
_SAME = ("model", "dataset", "split", "subset", "threat_model", "settings", "seeds")


def _shards_by_index(records: Sequence[EvaluationRecord]) -> dict[int, EvaluationRecord]:
    """The shard records by index; RecordError unless they are shards 0..N-1 of one evaluation."""
    if not records:
        raise RecordError("nothing to merge: give the shard records (REC1.json REC2.json ...).")
    for r in records:
        if r.data.get("shard") is None:
            raise RecordError("a record to merge is not a shard (it was evaluated without --shard).")
    count = records[0]["shard"]["count"]
    by_index: dict[int, EvaluationRecord] = {}
    for r in records:
        sh = r["shard"]
        if sh["count"] != count:
            raise RecordError(f"the shard records disagree on the number of shards ({count} vs {sh['count']}).")
        if sh["index"] in by_index:
            raise RecordError(f"shard {sh['index']}/{count} is given twice.")
        by_index[sh["index"]] = r
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise RecordError(f"shards {missing} of {count} are missing; evaluate them with --shard i/{count}.")
    first = records[0].data
    for r in by_index.values():
        for k in _SAME:
            if r.data[k] != first[k]:
                raise RecordError(f"the shard records differ in {k!r}: they are not shards of one evaluation.")
    return by_index


def _check_coverage(parts: list[SampleResults], n_total: int) -> None:
    expected_start = 0
    for i, p in enumerate(parts):
        if p.start != expected_start:
            raise RecordError(f"shard {i} starts at sample {p.start}, expected {expected_start}.")
        expected_start += p.n
        if i > 0 and (len(parts[i - 1].aa_broken_by) < parts[i - 1].n and len(p.aa_broken_by)):
            raise RecordError("AutoAttack samples of the shards are not one prefix of the subset.")
    if expected_start != n_total:
        raise RecordError(f"the shards cover {expected_start} of {n_total} samples.")


def _concat_samples(parts: list[SampleResults]) -> SampleResults:
    """The per-sample results of consecutive shards as one."""
    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if any(a is None for a in arrays) else np.concatenate(arrays)

    refs = [p.reference for p in parts]
    reference = None
    if all(r is not None for r in refs):
        reference = {**refs[0], "mismatch": sum(r["mismatch"] for r in refs), "n": sum(r["n"] for r in refs)}
    lib_warnings: list[str] = []
    for p in parts:
        lib_warnings += [m for m in p.aa_library_warnings if m not in lib_warnings]
    n_tc = next((p.aa_n_target_classes for p in parts if p.aa_n_target_classes is not None), None)
    return SampleResults(start=0, **{name: cat(name) for name in _ARRAYS},
                         clean_recheck_mismatch=sum(p.clean_recheck_mismatch for p in parts),
                         reference=reference, aa_attacks=next((p.aa_attacks for p in parts if p.aa_attacks), []),
                         aa_n_target_classes=n_tc, aa_library_warnings=lib_warnings,
                         threats=concat_threats([p.threats for p in parts]))


def concat_samples(parts: list[SampleResults]) -> SampleResults:
    """The per-sample results of consecutive parts (shards, blocks) as one (``start`` 0)."""
    return _concat_samples(parts)


def merge_records(records: Sequence[EvaluationRecord]) -> EvaluationRecord:
    """Combine the records of shards 0..N-1 of one evaluation into the record of the whole.

    The shards must describe the same model, data, subset and settings, and cover the subset
    exactly once; the numbers of the result are those of an unsharded evaluation.
    """
    by_index = _shards_by_index(records)
    count = len(by_index)
    parts = [by_index[i].samples() for i in range(count)]
    _check_coverage(parts, records[0]["subset"]["n_total"])
    meta = record_meta(by_index[0])
    meta["shard"] = None
    versions = [by_index[i]["versions"] for i in range(count)]
    timings: dict[str, Any] = {}
    for i in range(count):
        for k, v in by_index[i]["timings"].items():
            if isinstance(v, (int, float)):
                timings[k] = timings.get(k, 0.0) + v
    timings["shards"] = [by_index[i]["timings"] for i in range(count)]
    rec = summarize(meta, _concat_samples(parts), timings)
    mixed = any(v != versions[0] for v in versions)
    rec.data["merged_from"] = {"count": count, "versions": versions if mixed else None}
    if mixed:
        rec.data["warnings"].append("the shards ran with different library versions (see merged_from.versions).")
    return rec

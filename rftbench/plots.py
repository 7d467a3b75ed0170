"""Figures: robustness curves and schedules (matplotlib, Agg backend, PNG files)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_robustness_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | Path,
                           title: str = "Robustness curve") -> Path:
    """Accuracy against eps (x axis in units of 1/255) for one or more models."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for label, (eps, acc) in curves.items():
        ax.plot([e * 255 for e in eps], acc, marker="o", label=label)
    ax.set_xlabel("eps (x 1/255)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_schedules(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], out: str | Path,
                   target_eps: float) -> Path:
    """eps against training progress (0..1) for one or more schedules."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    for label, (progress, eps) in series.items():
        ax.plot(progress, eps, label=label)
    ax.set_xlabel("training progress")
    ax.set_ylabel("eps")
    ax.set_ylim(-0.02 * target_eps, 1.05 * target_eps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_phenomenon(df, out: str | Path, order: Sequence[str] | None = None,
                    title: str = "Robust fine-tuning on the embedded digits") -> Path:
    """Clean accuracy and expected robustness against target eps, one line per schedule, mean ±
    standard deviation over seeds (error bars). ``df``: a DataFrame with columns ``schedule``,
    ``eps``, ``acc_clean``, ``expected_robustness`` (one row per run, e.g.
    :func:`rftbench.phenomenon.runs_frame`)."""
    order = list(order or dict.fromkeys(df["schedule"]))
    stats = df.groupby(["schedule", "eps"])[["acc_clean", "expected_robustness"]].agg(["mean", "std"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, sharex=True)
    panels = (("acc_clean", "clean accuracy"), ("expected_robustness", "expected robustness"))
    for ax, (col, label) in zip(axes, panels):
        for schedule in order:
            s = stats.loc[schedule]
            ax.errorbar(s.index, s[(col, "mean")], yerr=s[(col, "std")].fillna(0), marker="o", capsize=3,
                        label=schedule)
        ax.set_xlabel("target eps")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def _save(fig, out: str | Path) -> Path:
    """Lay out, write atomically (creating the folder; :mod:`rftbench.atomic`) and close a
    figure; returns its path."""
    import io

    from .atomic import atomic_write_bytes

    try:
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=Path(out).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())

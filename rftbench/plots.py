"""Figures: robustness curves and schedules (matplotlib, Agg backend, PNG files), and the
report's training and compute figures (matplotlib Figures; the report inlines them)."""
from __future__ import annotations

import textwrap
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
    :func:`rftbench.results.phenomenon.runs_frame`)."""
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


def schedule_colours(names: Sequence[str]) -> dict[str, tuple[float, float, float, float]]:
    """One colour per distinct schedule label, in order of first appearance (tab10, then tab20
    beyond ten): every figure of a report draws a schedule in the same colour."""
    order = list(dict.fromkeys(names))
    cmap = matplotlib.colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(order)}


TrainingSeries = Mapping[str, Sequence[tuple[Sequence[float], ...]]]


def training_accuracy_figure(series: TrainingSeries, colours: Mapping[str, tuple] | None = None):
    """Clean and adversarial training accuracy per epoch: ``series[schedule]`` holds one
    ``(epochs, acc_clean, acc_adv)`` per seed (accuracies in [0, 1]), or ``(clean_epochs,
    acc_clean, adv_epochs, acc_adv)`` where the two differ (no ``acc_adv`` in an epoch that
    attacked no batch, e.g. at eps = 0). A schedule has one colour;
    clean is drawn solid, adversarial dashed; the legend names each (schedule, kind) pair once,
    below the axes so that it never hides a line. Returns the Figure (the caller saves it)."""
    colours = colours or schedule_colours(list(series))
    rows = max(1, len(series))
    fig, ax = plt.subplots(figsize=(9, 4.2 + 0.25 * rows), dpi=100)
    for name, seeds in series.items():
        for i, one in enumerate(seeds):
            clean_x, clean, adv_x, adv = one if len(one) == 4 else (one[0], one[1], one[0], one[2])
            for epochs, values, style, kind in ((clean_x, clean, "-", "clean"), (adv_x, adv, "--", "adversarial")):
                ax.plot(epochs, values, linestyle=style, marker=".", color=colours[name], alpha=0.9,
                        label=f"{name}: {kind}" if i == 0 else "_nolegend_")
    ax.set(xlabel="epoch", ylabel="training accuracy", ylim=(0, 1),
           title="Training accuracy on the same batches: clean (solid) and adversarial (dashed)")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=9, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    return fig


def compute_figure(names: Sequence[str], wall_s: Sequence[float], passes: Sequence[float],
                   colours: Mapping[str, tuple] | None = None):
    """Training wall time (s, mean over seeds) and attack sample passes (forward+backward) per
    row, horizontal bars in the schedule's colour; the height grows with the number of rows and
    long labels are wrapped, so nothing is cut. Returns the Figure."""
    colours = colours or schedule_colours(names)
    labels = [textwrap.fill(n, 28) for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 0.55 * max(1, len(names))), dpi=100, sharey=True)
    pos = list(range(len(names)))
    for ax, values, label in ((axes[0], wall_s, "training wall time (s, mean over seeds)"),
                              (axes[1], passes, "attack forward+backward sample passes")):
        ax.barh(pos, [0.0 if v != v else v for v in values], color=[colours[n] for n in names])
        ax.set_xlabel(label, fontsize=11)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=10)
    axes[0].set_yticks(pos, labels)
    axes[0].invert_yaxis()
    fig.suptitle("Compute cost", fontsize=12)
    fig.tight_layout()
    return fig


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

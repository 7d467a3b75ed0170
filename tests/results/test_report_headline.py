"""The report's headline table and figures, without MLflow: structure and figure specs."""
import matplotlib.colors as mcolors
import pandas as pd

from rftbench.plots import compute_figure, training_accuracy_figure
from rftbench.results.report import headline_table, short_hashes


def _row(schedule, **kw):
    base = {"rank": 1, "schedule": schedule, "n_seeds": 2, "seeds": "0,1", "certified": False, "flagged": False,
            "n_aa": 10.0, "n_samples": 64.0, "run_ids": "a,b", "warnings": ""}
    for m, v in (("clean", 0.9), ("pgd", 0.5), ("aa", 0.4), ("er", 0.6)):
        base.update({f"{m}_mean": v, f"{m}_std": 0.01, f"{m}_ci_lo": v - 0.05, f"{m}_ci_hi": v + 0.05})
    base.update(kw)
    return base


def test_headline_columns_certificate_and_differs_when_present():
    sub = pd.DataFrame([_row("linear(warmup=0.5)", differs="train.epochs 20 vs 2"),
                        _row("constant", certified=True, n_aa=64.0)])
    text = headline_table(sub)
    for col in ("schedule", "seeds", "clean", "PGD @ target ε", "AutoAttack @ target ε", "ER", "differs"):
        assert f"<th>{col}</th>" in text
    assert "train.epochs 20 vs 2" in text and "✓ certified" in text and "subset only" in text
    assert "0.9000 ± 0.0100" in text and "[0.8500, 0.9500]" in text
    assert "<th>differs</th>" not in headline_table(sub.drop(columns="differs"))


def test_short_hashes_cuts_digests_not_run_ids():
    h, run_id = "ab" * 32, "c" * 32
    assert short_hashes(f"{h} {run_id}") == f"{h[:12]}… {run_id}"


def test_training_chart_pairs_colours_per_schedule():
    series = {s: [([1, 2], [0.5, 0.6], [0.2, 0.3])] * 2 for s in ("a", "b", "c")}
    ax = training_accuracy_figure(series).axes[0]
    by_colour = {}
    for line in ax.get_lines():
        by_colour.setdefault(mcolors.to_hex(line.get_color()), set()).add(line.get_linestyle())
    assert len(by_colour) == 3 and all(v == {"-", "--"} for v in by_colour.values())
    assert len(ax.get_legend().get_texts()) == 6  # one entry per (schedule, kind), not per seed


def test_compute_figure_labels_fit_inside_the_figure():
    fig = compute_figure(["a" * 40, "b"], [1.0, 2.0], [100.0, 200.0])
    fig.canvas.draw()
    box = fig.bbox
    for ax in fig.axes:
        lab = ax.xaxis.label.get_window_extent()
        assert box.x0 <= lab.x0 and lab.x1 <= box.x1 and box.y0 <= lab.y0
    assert fig.get_size_inches()[0] >= 10


def test_adversarial_accuracy_may_start_later_than_clean():
    """An epoch that attacked no batch (eps = 0 at the start of a schedule) logs no acc_adv: the
    dashed line starts later (the demo's report once failed on 20 clean vs 16 adversarial epochs)."""
    clean_x, adv_x = list(range(1, 21)), list(range(5, 21))
    fig = training_accuracy_figure({"ramp": [(clean_x, [0.9] * 20, adv_x, [0.4] * 16)]})
    (solid, dashed) = fig.axes[0].get_lines()
    assert list(solid.get_xdata()) == clean_x and list(dashed.get_xdata()) == adv_x
    assert (solid.get_linestyle(), dashed.get_linestyle()) == ("-", "--")

"""The leaderboard, built from MLflow alone (``collect_results`` over finished runs)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import RftbenchError
from .tracking import client_for


@dataclass
class LeaderboardRow:
    rank: int
    run_name: str
    run_id: str
    schedule: str
    model: str
    dataset: str
    acc_clean: Optional[float]
    acc_sweep: Optional[float]
    acc_autoattack: Optional[float]
    expected_robustness: Optional[float]
    certified: bool
    train_wall_time_s: Optional[float]
    attack_fraction: Optional[float]
    er_name: str
    warnings: str


def collect_results(experiment: str, *, uri: str | None = None) -> list[LeaderboardRow]:
    """Finished, evaluated runs of ``experiment``, ranked by expected robustness (highest first)."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise RftbenchError(f"no MLflow experiment named {experiment!r} at {client.tracking_uri}. "
                            f"Known experiments: {', '.join(names) or '(none)'}.")
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=5000)
    rows = []
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        if "eval/expected_robustness" not in m:
            continue
        rows.append(LeaderboardRow(
            rank=0, run_name=r.info.run_name or "", run_id=r.info.run_id,
            schedule=t.get("rftbench.schedule", "?"), model=t.get("rftbench.model", "?"),
            dataset=t.get("rftbench.dataset", "?"), acc_clean=m.get("eval/acc_clean"),
            acc_sweep=m.get("eval/acc_sweep"), acc_autoattack=m.get("eval/acc_autoattack"),
            expected_robustness=m.get("eval/expected_robustness"),
            certified=t.get("rftbench.certified") == "True", train_wall_time_s=m.get("train/wall_time_s"),
            attack_fraction=m.get("train/attack_fraction"), er_name=t.get("rftbench.er_name", ""),
            warnings=t.get("rftbench.warnings", "")))
    rows.sort(key=lambda row: -(row.expected_robustness or 0.0))
    for i, row in enumerate(rows, 1):
        row.rank = i
    return rows


def rows_to_json(rows: list[LeaderboardRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def render_leaderboard(rows: list[LeaderboardRow], title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=title, title_style="bold")
    for col, just in [("#", "right"), ("run", "left"), ("schedule", "left"), ("clean %", "right"),
                      ("PGD %", "right"), ("AutoAttack %", "right"), ("ER %", "right"),
                      ("train s", "right"), ("attacked steps", "right"), ("notes", "left")]:
        table.add_column(col, justify=just)
    for r in rows:
        aa = _pct(r.acc_autoattack) + (" ✓" if r.certified else "")
        table.add_row(str(r.rank), r.run_name, r.schedule, _pct(r.acc_clean), _pct(r.acc_sweep), aa,
                      f"[bold]{_pct(r.expected_robustness)}[/bold]",
                      "-" if r.train_wall_time_s is None else f"{r.train_wall_time_s:.1f}",
                      "-" if r.attack_fraction is None else f"{100 * r.attack_fraction:.0f}%",
                      escape("⚠ " + r.warnings) if r.warnings else "")
    console.print(table)
    if rows:
        console.print(f"[dim]ER = {escape(rows[0].er_name)}; PGD at the target eps; AutoAttack (pyautoattack) at the "
                      f"target eps, ✓ = certified (standard version on the full designated subset).[/dim]")

"""``rftbench schedules | regimes | models | datasets``: what is registered."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from .common import add_json_flag, console, eps_value, print_json


def cmd_schedules_list(args) -> int:
    from ..scheduling import schedule_catalog

    items = schedule_catalog()
    if args.json:
        print_json(items)
        return 0
    table = Table(title="epsilon schedules")
    for col in ("name", "parameters: default \\[low, high]", "source"):
        table.add_column(col)
    for it in items:
        source = f"built-in: rftbench/schedules/{Path(it['source']).name}" if it["origin"] == "built-in" else it["source"]
        table.add_row(it["name"], _params_text(it["params"]), source)
    console().print(table)
    return 0


def _params_text(params: list[dict]) -> str:
    """Declared parameters as ``name=default [low, high] int log``, comma-separated."""
    return ", ".join(f"{p['name']}={p['default']:g} \\[{p['low']:g}, {p['high']:g}]"
                     + (" int" if p["kind"] == "int" else "") + (" log" if p["log"] else "") for p in params) or "-"


def cmd_regimes_list(args) -> int:
    from ..regimes import REGIMES

    items = [{**e.obj.describe(), "name": e.name, "source": e.source} for e in REGIMES.entries()]
    if args.json:
        print_json(items)
        return 0
    table = Table(title="fine-tuning regimes (model.regime)")
    for col in ("name", "parameters: default \\[low, high]", "options", "source"):
        table.add_column(col)
    for it in items:
        opts = ", ".join(f"{k}={v!r}" for k, v in it["options"].items()) or "-"
        table.add_row(it["name"], _params_text(it["params"]), opts, it["source"])
    console().print(table)
    return 0


def cmd_schedules_plot(args) -> int:
    from ..scheduling import plot_schedule_specs

    path, drawn = plot_schedule_specs(args.specs, args.out, target_eps=args.target_eps, total_steps=args.total_steps)
    if args.json:
        print_json({"figure": str(path), "schedules": [{"name": s.name, "params": s.values} for s in drawn],
                     "target_eps": args.target_eps, "total_steps": args.total_steps})
    else:
        console().print(f"wrote {path} ({', '.join(map(repr, drawn))})")
    return 0


def cmd_models_list(args) -> int:
    from ..models import describe_models

    info = describe_models(args.timm)
    if args.json:
        print_json(info)
        return 0
    out = console()
    table = Table(title="model families (name -> model.name)")
    for col in ("family", "usage"):
        table.add_column(col)
    for f in info["families"]:
        table.add_row(f["name"], f["usage"])
    out.print(table)
    table = Table(title="built-in models")
    for col in ("name", "input (C, H, W)", "description"):
        table.add_column(col)
    for b in info["builtins"]:
        table.add_row(b["name"], str(tuple(b["input_size"])), b["description"])
    out.print(table)
    t = info["timm"]
    table = Table(title=f"timm {t['version']}: {t['n_architectures']} architectures, {t['n_pretrained']} pretrained tags")
    for col in ("pattern", "architectures", "pretrained tags"):
        table.add_column(col)
    for p in t["patterns"]:
        table.add_row(p["pattern"], str(p["n_architectures"]), str(p["n_pretrained"]))
    out.print(table)
    out.print("paper backbones: " + ", ".join(f"{k}={v}" for k, v in info["paper_backbones"].items()))
    if "matches" in t:
        out.print(f"timm pretrained names matching {args.timm!r} ({len(t['matches'])}):")
        out.print("\n".join("  timm:" + m for m in t["matches"]) or "  (none)")
    return 0


def cmd_datasets_list(args) -> int:
    from ..data import describe_datasets

    items = describe_datasets()
    if args.json:
        print_json(items)
        return 0
    table = Table(title="datasets (data.name); data.root or $RFTBENCH_DATA is the data root")
    for col in ("name", "dataset", "classes", "splits", "download", "augment: true"):
        table.add_column(col)
    for d in items:
        table.add_row(d["name"], d["title"], str(d.get("num_classes") or "-"), d.get("splits", ""),
                      "yes" if d.get("download") else "no", d.get("augment_default", "-"))
    console().print(table)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("schedules", help="epsilon-schedule plugins")
    ssub = s.add_subparsers(dest="schedules_command", required=True)
    sl = ssub.add_parser("list")
    add_json_flag(sl)
    sl.set_defaults(func=cmd_schedules_list)
    sp = ssub.add_parser("plot", help="eps against training progress, several schedules on one figure")
    sp.add_argument("specs", nargs="+", metavar="NAME[:k=v,...]")
    sp.add_argument("--out", required=True, metavar="FILE.png")
    sp.add_argument("--target-eps", type=eps_value, default=4 / 255, help="pixel units, e.g. 4/255 (default)")
    sp.add_argument("--total-steps", type=int, default=1000, help="steps (or epochs) the schedule is sampled at")
    add_json_flag(sp)
    sp.set_defaults(func=cmd_schedules_plot)

    rg = sub.add_parser("regimes", help="fine-tuning regime plugins (which parameters train)")
    rgl = rg.add_subparsers(dest="regimes_command", required=True).add_parser("list")
    add_json_flag(rgl)
    rgl.set_defaults(func=cmd_regimes_list)

    mo = sub.add_parser("models", help="the model registry")
    mosub = mo.add_subparsers(dest="models_command", required=True)
    mol = mosub.add_parser("list", help="model families, built-ins and timm name patterns")
    mol.add_argument("--timm", metavar="PATTERN", help="also list timm pretrained names matching PATTERN, e.g. 'vit_base*'")
    add_json_flag(mol)
    mol.set_defaults(func=cmd_models_list)

    ds = sub.add_parser("datasets", help="the dataset registry")
    dssub = ds.add_subparsers(dest="datasets_command", required=True)
    dsl = dssub.add_parser("list", help="datasets, their splits, layouts and download sources")
    add_json_flag(dsl)
    dsl.set_defaults(func=cmd_datasets_list)

"""``rftbench runs``: MLflow runs of interrupted trainings."""
from __future__ import annotations

import argparse


from .common import add_json_flag, console, print_json


def cmd_runs_mark_stale(args) -> int:
    from ..tracking.recovery import mark_stale_runs, stale_runs_to_json

    stale = mark_stale_runs(args.experiment, older_than_s=args.older_than, dry_run=args.dry_run)
    if args.json:
        print_json(stale_runs_to_json(stale))
        return 0
    verb = "would mark" if args.dry_run else "marked"
    for s in stale:
        console().print(f"{verb} {s.run_id} ({s.run_name}) KILLED: {s.reason}")
    console().print(f"{len(stale)} stale run(s); resume one with `rftbench train CONFIG --resume RUN_ID`.")
    return 0


def cmd_runs_sync(args) -> int:
    from ..tracking.spool import sync_run_dir

    res = sync_run_dir(args.run_dir, uri=args.tracking_uri)
    if args.json:
        print_json({"run_id": res.run_id, "bytes_sent": res.bytes_sent, "run_dir": res.run_dir})
    else:
        console().print(f"synced {res.run_dir} to MLflow run {res.run_id} ({res.bytes_sent} bytes of spool sent)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("runs", help="MLflow runs of interrupted trainings")
    rsub = r.add_subparsers(dest="runs_command", required=True)
    ms = rsub.add_parser("mark-stale", help="end RUNNING runs whose process is gone (e.g. SIGKILLed) as KILLED")
    ms.add_argument("--experiment", required=True)
    ms.add_argument("--older-than", type=float, default=3600.0, metavar="SECONDS",
                    help="runs from other hosts count as stale after this long without a heartbeat")
    ms.add_argument("--dry-run", action="store_true", help="only list them")
    add_json_flag(ms)
    ms.set_defaults(func=cmd_runs_mark_stale)
    sy = rsub.add_parser("sync", help="send a run's spooled tracking data (kept while the store was unreachable)")
    sy.add_argument("run_dir", metavar="RUN_DIR")
    sy.add_argument("--tracking-uri", help="the store to send to (default: the one the run was started with)")
    add_json_flag(sy)
    sy.set_defaults(func=cmd_runs_sync)

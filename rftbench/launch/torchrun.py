"""``rftbench train CONFIG --nproc N``: torchrun's launcher (torch elastic, standalone) run in
this process, and an MLflow run that never stays RUNNING because a rank died.

Rank 0 writes its MLflow run id, before training, to the file named by ``RFTBENCH_RUN_ID_FILE``
(:func:`rftbench.training.distributed.announce_run`; set here), and a rank that fails with an
error of its own records it beside that file and in the run directory (``rank<R>.failed``).
When the job fails -- a rank exited non-zero or was killed, and torch elastic stopped the
others -- and the run is still RUNNING because rank 0 itself died, or was stopped before it
could end the run, it is ended here: FAILED with the recorded errors when a rank recorded one
(whether rank 0 or this process ends the run, its status is the same), else KILLED (the ranks
died without a word), its ``rftbench.error`` tag saying how each rank ended and how to resume.
(A surviving rank 0 ends the run itself: FAILED with a peer's recorded error, KILLED when a peer
died, see :class:`~rftbench.training.distributed.RankLost`.) A bare ``torchrun ... -m rftbench
train`` has no such parent: a run whose rank 0 was SIGKILLed stays RUNNING until ``rftbench runs
mark-stale`` (which reads the records in the run directory the same way) or the next
``rftbench sweep`` finds its process gone.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..training.distributed import RUN_ID_FILE_ENV


def run_nproc(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m rftbench ARGV`` on ``nproc`` local ranks (``torchrun --standalone
    --nproc_per_node NPROC -m rftbench ARGV``); return 0, 1 (a rank failed) or 130 (this
    process got SIGTERM / SIGINT: the ranks were stopped, they saved their state)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m", "rftbench", *argv])
    old = os.environ.get(RUN_ID_FILE_ENV)
    with tempfile.TemporaryDirectory(prefix="rftbench-nproc-") as tmp:
        id_file = Path(tmp) / "run_id"
        os.environ[RUN_ID_FILE_ENV] = str(id_file)
        try:
            run(args)
            return 0
        except ChildFailedError as exc:
            print(exc.format_msg(), file=sys.stderr)
            end_unended_run(id_file, f"the DDP job failed ({describe_failures(exc.failures)})")
            return 1
        except SignalException as exc:
            end_unended_run(id_file, f"the DDP launcher received {exc.sigval.name}")
            return 130
        finally:
            if old is None:
                os.environ.pop(RUN_ID_FILE_ENV, None)
            else:
                os.environ[RUN_ID_FILE_ENV] = old


def describe_failures(failures: Mapping[int, Any]) -> str:
    """How each failed rank ended, e.g. "rank 1 was killed by SIGKILL, rank 0 was killed by SIGTERM"
    (``failures``: torch elastic's ``ProcessFailure`` per global rank; earliest first, and at the
    same second a SIGTERM, which torch elastic sends the other ranks, last)."""
    parts = []
    for rank in sorted(failures, key=lambda r: (failures[r].timestamp, failures[r].exitcode == -15, r)):
        f = failures[rank]
        how = f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with code {f.exitcode}"
        parts.append(f"rank {rank} {how}")
    return ", ".join(parts)


def end_unended_run(id_file: Path, reason: str) -> None:
    """End the run named in ``id_file`` if it is still RUNNING (rank 0 could not end it): FAILED
    with the errors ranks recorded beside ``id_file`` or in the run's directory (its
    ``rftbench.run_dir`` tag), else KILLED (:func:`rftbench.tracking.recovery.end_unfinished`). Nothing to
    do when rank 0 never created the run; a spooled (offline) run is left to ``rftbench runs
    sync``. A tracking store that fails here is reported, not raised."""
    if not id_file.is_file():
        return
    run_id = id_file.read_text().strip()
    if run_id.startswith("offline-"):
        print(f"rftbench: run {run_id} was spooled offline and not ended; send it with `rftbench runs sync "
              f"RUN_DIR`, then `rftbench runs mark-stale`.", file=sys.stderr)
        return
    from ..tracking.recovery import end_unfinished, run_dir_of
    from ..tracking.store import client_for

    try:
        run = client_for().get_run(run_id)
        if run.info.status != "RUNNING":
            return
        status = end_unfinished(run_id, f"{reason}; rank 0 could not end the run",
                                folders=(id_file.parent, run_dir_of(run)))
    except Exception as exc:  # noqa: BLE001 - the job's own failure is the message that matters
        print(f"rftbench: could not end run {run_id} ({exc}); `rftbench runs mark-stale` will.", file=sys.stderr)
        return
    todo = "fix the cause, then resume" if status == "FAILED" else "resume"
    print(f"rftbench: run {run_id} ended {status} ({reason}); {todo} it with `rftbench train CONFIG --resume "
          f"{run_id}`.", file=sys.stderr)

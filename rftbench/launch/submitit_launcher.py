"""The ``submitit`` launcher: one SLURM job array for all calls (``pip install 'rftbench[submitit]'``).

``partition``, ``gpus_per_run``, ``cpus_per_run``, ``time_min``, ``mem_gb`` and
``array_parallelism`` (how many array tasks run at once) become the array's SLURM options;
logs and pickles go under ``folder``. ``cluster="local"`` runs the same path on submitit's
LocalExecutor (real subprocesses, same pickling).

- **Memory**: ``mem_gb`` None asks for :data:`MEM_GB_PER_CPU` GB per CPU plus
  :data:`MEM_GB_PER_GPU` per GPU, so that several tasks share a node (SLURM's own default is
  often the whole node, which runs tasks one at a time); ``mem_gb=0`` asks for SLURM's default.
- **Preemption and time limits are resumptions**: SLURM sends SIGUSR2
  ``slurm_signal_delay_s`` before the time limit (default ``min(90, limit / 4)``) and on
  preemption; training and evaluation stop at their next safe point with the state saved, and
  the task is requeued through submitit's own checkpoint hook (:meth:`CheckpointableCall.checkpoint`:
  the same call, which resumes the run it stopped), at most ``slurm_max_requeues`` time-outs.
  Without requeue (``slurm_requeue=False`` or the count spent) the run ends KILLED and the next
  sweep resumes it.
- **No wait without an end**: an interrupted call raises :class:`~rftbench.errors.JobInterruptedError`
  (an ``Exception``, which submitit records, unlike the run's ``KeyboardInterrupt``), and the
  wait polls ``squeue`` itself: a task that SLURM reports ended, or no longer reports at all,
  without a result is given up after a grace period (``unknown_timeout_s`` for "not listed"),
  with what is known. This works with and without accounting (``sacct``).
- **Messages**: a failed task's line carries the call's own last error line (the run's
  one-line message), then the log path.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, Callable, Optional, Sequence

from ..errors import JobInterruptedError
from .options import LaunchOptions, Outcome, call_in_worker, require_extra, trained_run_id
from .messages import last_error_line

MEM_GB_PER_CPU = 4
MEM_GB_PER_GPU = 16
#: squeue states of a task that may still produce a result
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
ENDED_GRACE_S = 20.0  # a result file may land on a shared file system a little after the job ends
POLL_S = 2.0
#: tags set on a run that a SLURM task trained (from the task's environment and the options)
SLURM_TAGS = ("rftbench.slurm.job_id", "rftbench.slurm.restarts", "rftbench.slurm.requeue",
              "rftbench.slurm.signal_delay_s", "rftbench.slurm.max_requeues")


def signal_delay_s(options: LaunchOptions) -> int:
    """Seconds before the time limit at which SLURM sends SIGUSR2 (see the module docstring)."""
    if options.slurm_signal_delay_s is not None:
        return int(options.slurm_signal_delay_s)
    return max(5, min(90, int(options.time_min * 60 // 4)))


def mem_gb(options: LaunchOptions) -> Optional[float]:
    """The memory each task asks for, in GB (None: SLURM's default)."""
    if options.mem_gb is None:
        return MEM_GB_PER_CPU * max(1, options.cpus_per_run) + MEM_GB_PER_GPU * float(options.gpus_per_run or 0)
    return options.mem_gb or None


def make_executor(options: LaunchOptions):
    """A submitit ``AutoExecutor`` configured from ``options``."""
    submitit = require_extra("submitit", "submitit")
    executor = submitit.AutoExecutor(folder=f"{options.folder}/%j", cluster=options.cluster,
                                     slurm_max_num_timeout=options.slurm_max_requeues)
    params: dict[str, Any] = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_run,
                              "name": "rftbench", "slurm_array_parallelism": options.array_parallelism}
    if executor.cluster == "slurm":
        params["slurm_signal_delay_s"] = signal_delay_s(options)
        if mem_gb(options):
            params["mem_gb"] = mem_gb(options)
    elif options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.gpus_per_run:
        params["gpus_per_node"] = int(options.gpus_per_run)
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


class CheckpointableCall:
    """What one array task runs: ``fn(*args)`` in a prepared worker (:func:`call_in_worker`).

    A call that stops at a signal (its ``KeyboardInterrupt``, whose message starts with the
    signal's name) becomes :class:`JobInterruptedError`; when that signal was SLURM's SIGUSR2
    and requeueing is on, submitit's own handler is asked first to checkpoint and requeue the
    task (it exits when it does). :meth:`checkpoint` is submitit's checkpoint hook."""

    def __init__(self, fn: Callable, args: tuple, options: LaunchOptions):
        self.fn, self.args, self.options = fn, tuple(args), options

    def __call__(self) -> Any:
        try:
            value = call_in_worker(self.fn, self.args, self.options)
        except KeyboardInterrupt as exc:
            message = str(exc) or type(exc).__name__
            if message.startswith("SIGUSR2") and self.options.slurm_requeue:
                _requeue_through_submitit()
            raise JobInterruptedError(message) from None
        _tag_slurm_run(value, self.options)
        return value

    def checkpoint(self, *args: Any, **kwargs: Any):
        """The same call again: it finds the run it stopped KILLED with its state, and resumes it."""
        submitit = require_extra("submitit", "submitit")
        return submitit.helpers.DelayedSubmission(self)


def _requeue_through_submitit() -> None:
    """Run submitit's SIGUSR2 handler now (training held the signal until its safe point): it
    checkpoints this call and requeues the task, then exits; it raises when it will not requeue."""
    handler = signal.getsignal(signal.SIGUSR2)
    if callable(handler) and os.environ.get("SLURM_JOB_ID"):
        handler(signal.SIGUSR2, None)


def _tag_slurm_run(value: Any, options: LaunchOptions) -> None:
    """Record on the run this task trained how SLURM ran it (restarts = requeues so far)."""
    run_id = trained_run_id(value)
    if not run_id or not os.environ.get("SLURM_JOB_ID"):
        return
    from ..tracking.store import client_for

    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job else os.environ["SLURM_JOB_ID"]
    values = (job, os.environ.get("SLURM_RESTART_COUNT", "0"), options.slurm_requeue, signal_delay_s(options),
              options.slurm_max_requeues)
    client = client_for()
    for key, v in zip(SLURM_TAGS, values):
        client.set_tag(run_id, key, str(v))


def launch_submitit(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    executor = make_executor(options)
    calls = [CheckpointableCall(fn, tuple(a), options) for a in args_list]
    with executor.batch():
        jobs = [executor.submit(call) for call in calls]
    if executor.cluster == "slurm":
        return wait_slurm(jobs, options)
    return [_outcome(job) for job in jobs]


def _outcome(job) -> Outcome:
    try:
        return Outcome(value=job.result())
    except Exception as exc:  # noqa: BLE001 - a failed or killed array task fails alone
        return Outcome(error=f"submitit job {job.job_id}: {last_error_line(str(exc)) or type(exc).__name__} "
                             f"(logs: {job.paths.stderr})")


def wait_slurm(jobs: Sequence[Any], options: LaunchOptions) -> list[Outcome]:
    """Wait for every task: its result file, or SLURM saying (through ``squeue``) that it ended
    or no longer knowing it, for longer than the grace period; one :class:`Outcome` each."""
    out: list[Optional[Outcome]] = [None] * len(jobs)
    since: dict[int, float] = {}
    pending = set(range(len(jobs)))
    while pending:
        states = squeue_states({jobs[i].job_id.split("_")[0] for i in pending})
        for i in sorted(pending):
            job = jobs[i]
            if job.paths.result_pickle.exists():
                out[i] = _outcome(job)
            else:
                state = states.get(job.job_id) if states is not None else "UNANSWERED"
                if state in ACTIVE_STATES or state == "UNANSWERED":
                    since.pop(i, None)
                    continue
                waited = time.monotonic() - since.setdefault(i, time.monotonic())
                if waited < (ENDED_GRACE_S if state else options.unknown_timeout_s):
                    continue
                out[i] = Outcome(error=_gone_message(job, state, waited))
            pending.discard(i)
        if pending:
            time.sleep(POLL_S)
    return [o for o in out if o is not None]


def squeue_states(array_ids: set[str]) -> Optional[dict[str, str]]:
    """{task id ("123_4" or "123"): state} of every task SLURM lists for these jobs (pending
    array tasks one by one); None when ``squeue`` itself does not answer (then nothing is
    given up on)."""
    cmd = ["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(sorted(array_ids))]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0 and "Invalid job id" not in res.stderr:
        return None
    return dict(line.split()[:2] for line in res.stdout.splitlines() if len(line.split()) >= 2)


def _final_state(job_id: str) -> Optional[str]:
    """The task's state from SLURM's accounting, where there is accounting."""
    try:
        res = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [s.strip() for s in res.stdout.splitlines() if s.strip()]
    return lines[-1].split()[0] if res.returncode == 0 and lines else None


def _gone_message(job, state: Optional[str], waited_s: float) -> str:
    state = state or _final_state(job.job_id)
    what = f"ended {state}" if state else f"is no longer known to SLURM (not listed for {waited_s:.0f} s)"
    log = _read(job.paths.stderr) + "\n" + _read(job.paths.stdout)
    said = last_error_line(log)
    return (f"submitit job {job.job_id} {what} without a result" + (f": {said}" if said else "")
            + f" (logs: {job.paths.stderr}); a rerun of the sweep resumes its run")


def _read(path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""

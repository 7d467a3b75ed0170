"""The torch intra-op CPU threads of a training process: rftbench's rule (``train.threads`` 0 /
None) and the CPUs other work keeps busy."""
from __future__ import annotations

import os
from typing import Optional, Sequence


def busy_cpus(cpus: Sequence[int], sample_s: float = 0.25) -> Optional[float]:
    """How many of ``cpus`` (CPU ids) other work keeps busy: the sum over them of the busy share
    of each (1 - idle / total time in Linux's ``/proc/stat``) over ``sample_s`` seconds, less
    what this process's own threads used meanwhile; None where ``/proc/stat`` cannot be read."""
    import time

    def ticks() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
                    values = [int(v) for v in fields[:8]]
                    out[int(name[3:])] = (values[3] + values[4], sum(values))  # idle + iowait, all
        return out

    wanted = set(cpus)
    try:
        before, own0 = ticks(), time.process_time()
        time.sleep(sample_s)
        after, own = ticks(), time.process_time() - own0  # this process's threads do not count
    except (OSError, ValueError, IndexError):
        return None
    busy = -own / sample_s
    for cpu, (idle1, total1) in after.items():
        idle0, total0 = before.get(cpu, (idle1, total1))
        if total1 > total0:
            busy += 1.0 - (idle1 - idle0) / (total1 - total0)
    return max(0.0, busy)


def threads_rule(cores: int, *, processes: int = 1, busy: Optional[float] = None) -> int:
    """rftbench's default intra-op thread count for one process: its share of ``cores`` among the
    ``processes`` processes of one run (e.g. torchrun's ranks on this machine), less the cores
    ``busy`` with other work (rounded), at least 1. Multi-threaded CPU kernels wait for their
    slowest thread at every operation, so a thread that shares its core with another process
    stalls all of them (a 2-epoch digits training on 2 cores: ~1.7 s idle, 15-24 s beside one
    busy process with 2 threads, 2.6 s with one)."""
    share = max(1, cores // max(1, processes))
    return max(1, share - (round(busy) if busy else 0))


def set_torch_threads(requested: Optional[int] = None) -> tuple[int, str]:
    """Set torch's intra-op threads for this process and return ``(count, why)``.

    ``requested`` > 0 (``train.threads``) is set as it is; 0 or None applies :func:`threads_rule`
    to this process's CPUs (its affinity), torchrun's ``LOCAL_WORLD_SIZE`` and the CPUs busy
    right now (:func:`busy_cpus`, sampled only when there is something to lower), and never
    raises the count above what torch already uses (``OMP_NUM_THREADS``, a launcher's
    ``threads`` or an earlier call stay the ceiling). The rule is applied once, where a process
    starts its training: work that starts later beside it is not seen.
    """
    import torch

    if requested:
        torch.set_num_threads(int(requested))
        return int(requested), "train.threads"
    current = torch.get_num_threads()
    if current <= 1:
        return current, "already one thread"
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    busy = busy_cpus(cpus)
    n = min(current, threads_rule(len(cpus), processes=processes, busy=busy))
    why = (f"rule: {len(cpus)} cores / {processes} process(es), "
           f"{'unknown' if busy is None else f'{busy:.1f}'} busy, at most torch's {current}")
    if n != current:
        torch.set_num_threads(n)
    return n, why


__all__ = ["busy_cpus", "set_torch_threads", "threads_rule"]

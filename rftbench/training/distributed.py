"""Several devices for one run: torch DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node N -m rftbench train CONFIG`` (or ``rftbench train CONFIG --nproc N``,
which runs torchrun's launcher in its own process) runs N ranks; :func:`init_distributed` joins them (NCCL on GPUs, gloo on
CPU). The data order stays a function of (seed, epoch): every global batch of the
single-process run (``data.batch_size`` samples) is cut into N contiguous slices, one per rank
(:class:`ShardedBatchSampler`), so the ranks together see exactly the batches one process would;
each rank's loss is weighted by its share of the global batch (:func:`loss_share`: slices differ
by one sample when the batch does not divide), so DDP's gradient average is the single-process
gradient. Each rank attacks its own slice, from its rows of the random start one process would
draw for the whole batch (:class:`rftbench.attacks.TrainAttack`, ``rows=``): every rank keeps
the training RNG exactly where one process would.
BatchNorm as ``train.batchnorm`` says: ``local``, per-rank statistics (the default); ``sync`` converts it to
SyncBatchNorm (then the statistics are those of the global batch; GPUs only), and
``frozen`` keeps BatchNorm in eval mode (same numbers with any number of ranks). Only rank 0 logs to MLflow
and writes checkpoints, in a run directory it sends the other ranks (:func:`send_to_ranks`);
the state holds the position in global batches, so a run resumes with any number of ranks.
A SIGTERM on any rank stops every rank at the next optimizer step (:class:`DistributedSignalStop`); a non-finite loss on any rank stops every rank at the same
step (:func:`earliest_bad`).

A rank that dies (SIGKILL, the OOM killer): torchrun stops the others. A surviving rank whose
training then fails because that peer is gone raises :class:`RankLost` (a KeyboardInterrupt,
so rank 0 ends the MLflow run KILLED, not FAILED; peers on this host are checked by pid). A
rank that fails with an error of its own records it before it exits (:func:`record_failure`:
``rank<R>.failed`` in the run directory and, under ``rftbench train --nproc``, in the launcher's
folder), and then the run ends FAILED with that error whoever ends it: the survivors raise
:class:`~rftbench.errors.RankFailedError` (also when torchrun's SIGTERM stopped them: a stop
reads the records first, and under DDP the signal handlers stay installed while rank 0 ends the
run); if rank 0 itself dies, or is stopped before it could end the run, the run is left RUNNING
and ``rftbench train --nproc N``'s launching process (it learns the run id from the file named
by ``RFTBENCH_RUN_ID_FILE``, see :func:`announce_run` and :mod:`rftbench.launch.torchrun`) or,
under a bare ``torchrun``, ``rftbench runs mark-stale`` reads the records first too
(:func:`rftbench.tracking.recovery.end_unfinished`). Only when no rank recorded an error (they died
without a word) does the run end KILLED (resumable). The next ``rftbench sweep`` resumes a run
left RUNNING once its process is gone. A rank whose
launcher is gone SIGKILLs itself (:func:`rftbench.tracking.recovery.exit_with_launcher`).
With one process nothing here runs: the single-process path is unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist

from .callbacks import SignalStop

RUN_ID_FILE_ENV = "RFTBENCH_RUN_ID_FILE"
_peers: list[dict[str, Any]] = []  # every rank's process tags (host, pid, start), gathered at init


class RankLost(KeyboardInterrupt):
    """Another rank of this DDP job was killed, so this one stopped too. A KeyboardInterrupt, so
    that the MLflow run ends KILLED (resumable with ``rftbench train CONFIG --resume RUN_ID``),
    not FAILED."""


def _failure_folders(run_dir: str | Path | None) -> list[Path]:
    """Where this rank records a failure: the run directory, and under ``rftbench train --nproc``
    also the launcher's folder (beside the ``RFTBENCH_RUN_ID_FILE``), which finds it there even
    when the run's ``rftbench.run_dir`` tag never reached the store."""
    out = [Path(run_dir)] if run_dir is not None else []
    id_file = os.environ.get(RUN_ID_FILE_ENV)
    return out + ([Path(id_file).parent] if id_file else [])


def record_failure(run_dir: str | Path | None, rank: int, exc: BaseException) -> None:
    """Rank ``rank`` failed with ``exc``: say so (``rank<R>.failed``) for the ranks that outlive it
    and for whoever ends the run (written before the process exits, so before its peers'
    collectives fail and before torchrun's SIGTERM; see :func:`rftbench.tracking.recovery.end_unfinished`)."""
    from ..atomic import atomic_write_text
    from ..tracking.recovery import failure_file

    for folder in _failure_folders(run_dir):
        try:
            atomic_write_text(failure_file(folder, rank), f"{type(exc).__name__}: {exc}"[:2000])
        except OSError:
            pass


def clear_failure(run_dir: str | Path | None, rank: int, world: int = 1) -> None:
    """Forget rank ``rank``'s failure of an earlier attempt of this run (at the start of a resume);
    rank 0 also forgets those of ranks ``world`` and above (an attempt with more processes), so a
    record never outlives its attempt."""
    from ..tracking.recovery import failure_file, rank_failures

    for folder in _failure_folders(run_dir):
        stale = [r for r in rank_failures(folder) if r >= world] if rank == 0 else []
        for r in (rank, *stale):
            failure_file(folder, r).unlink(missing_ok=True)


def peer_failures(run_dir: str | Path | None, world: int) -> list[str]:
    """``"rank R: <error>"`` for every other rank that recorded a failure in ``run_dir``, earliest first."""
    from ..tracking.recovery import rank_failures

    me = current().rank
    return [f"rank {r}: {t}" for r, t in rank_failures(*_failure_folders(run_dir)).items() if r != me and r < world]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> DistInfo:
    """Rank and world size as torchrun sets them (``RANK``, ``WORLD_SIZE``); (0, 1) otherwise."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def current() -> DistInfo:
    """The joined process group's rank and size, or (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group torchrun set up (a no-op for one process): NCCL when the run
    trains on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo otherwise."""
    info = env_world()
    if not info.active or dist.is_initialized():
        return current()
    from ..task import resolve_device

    cuda = resolve_device(device_name).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    from ..tracking.recovery import process_tags

    _peers[:] = [{}] * dist.get_world_size()
    dist.all_gather_object(_peers, process_tags())
    return current()


def lost_peers() -> list[str]:
    """The other ranks of this job on this host whose process is gone (e.g. "rank 1 (pid 4242)");
    ranks on other hosts cannot be checked and are never listed."""
    from ..tracking.recovery import HOST_TAG, PID_TAG, START_TAG, process_state

    me = current().rank
    return [f"rank {r} (pid {t[PID_TAG]})" for r, t in enumerate(_peers)
            if r != me and t and process_state(t[HOST_TAG], int(t[PID_TAG]), str(t[START_TAG])) == "dead"]


def send_to_ranks(value: Any) -> None:
    """Rank 0: send a picklable ``value`` to every other rank (:func:`receive_from_main`)."""
    dist.broadcast_object_list([value], src=0)


def receive_from_main() -> Any:
    """Rank > 0: the value rank 0 sent with :func:`send_to_ranks`."""
    box = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def announce_run(run_id: str) -> None:
    """Write ``run_id`` to the file named by ``RFTBENCH_RUN_ID_FILE``, if set (by ``rftbench
    train --nproc``, whose process then ends the run KILLED should rank 0 die before it could)."""
    path = os.environ.get(RUN_ID_FILE_ENV)
    if path:
        from ..atomic import atomic_write_text

        atomic_write_text(Path(path), run_id)


def rank_rows(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a global batch of ``n`` samples that rank ``rank`` of ``world`` trains on."""
    return rank * n // world, (rank + 1) * n // world


def check_batches(plan: Any, world: int) -> None:
    """Refuse a :class:`~rftbench.training.plan.BatchPlan` whose global batches cannot give each
    of ``world`` ranks at least one sample (an empty slice would make a rank's loss NaN)."""
    from ..errors import ConfigError

    last = plan.size_of(plan.steps_per_epoch - 1)
    if min(plan.batch_size, last) >= world:
        return
    what = (f"data.batch_size {plan.batch_size}" if plan.batch_size < world else
            f"the last batch of every epoch ({plan.n_train} training samples in batches of {plan.batch_size} "
            f"leave {last})")
    raise ConfigError(f"{what} cannot be split over {world} DDP ranks: each rank needs at least one sample of "
                      f"every batch. Use fewer processes (--nproc) or a batch size of at least {world} whose last "
                      f"batch has at least {world} samples (or exactly 1, which is dropped).")


def loss_share(n_local: int, n_global: int, world: int) -> float:
    """The factor on a rank's mean loss that makes DDP's gradient (the average over ranks) the
    gradient of the mean over the global batch: ``world * n_local / n_global`` (1 for equal slices)."""
    return world * n_local / n_global


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Rank ``rank``'s slice of every global batch of an epoch (see the module docstring).

    ``sampler`` is the run's :class:`~rftbench.data.EpochSampler` (the global order of
    (seed, epoch)); ``plan`` the :class:`~rftbench.training.plan.BatchPlan` of the global batch.
    ``set_epoch(e, first_batch=k)`` starts at global batch ``k`` (a resumed run).
    """

    def __init__(self, sampler: Any, plan: Any, rank: int, world: int):
        self.sampler, self.plan, self.rank, self.world = sampler, plan, rank, world
        self.first_batch = 0

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, 0)
        self.first_batch = first_batch

    def __iter__(self) -> Iterator[list[int]]:
        order, bs = self.sampler.order(), self.plan.batch_size
        for k in range(self.first_batch, self.plan.steps_per_epoch):
            lo, hi = rank_rows(self.plan.size_of(k), self.rank, self.world)
            yield order[k * bs + lo:k * bs + hi]

    def __len__(self) -> int:
        return self.plan.steps_per_epoch - self.first_batch


def wrap_model(model: Any, device: torch.device, sync_batchnorm: bool,
               find_unused: bool = False) -> torch.nn.parallel.DistributedDataParallel:
    """``model`` (a PixelModel) for the objective's forward: its BatchNorm layers converted to
    SyncBatchNorm first when asked (in place, the same parameters), then wrapped in DDP, which
    all-reduces the parameters that require a gradient now; ``find_unused``: some of them go
    without one in some steps (a regime whose trained set changes, e.g. LP-FT's probe phase)."""
    if sync_batchnorm:
        if device.type != "cuda":
            from ..errors import ConfigError

            raise ConfigError("train.batchnorm: sync needs GPUs (SyncBatchNorm runs on NCCL only); on CPU use "
                              "train.batchnorm: local (per-process statistics) or frozen.")
        model.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.net)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def _device() -> torch.device:
    """Where collective tensors live: the current GPU for NCCL, the CPU for gloo."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_meter(meter: Any) -> None:
    """Sum a :class:`~rftbench.training.step.BatchMeter`'s sums and counts over all ranks, in place."""
    counts = torch.tensor([meter.n, meter.n_clean, meter.n_adv, meter.eps_sum], dtype=torch.float64)
    sums = torch.stack([meter.loss_sum, meter.correct_clean, meter.correct_adv]).to(torch.float64)
    both = torch.cat([sums.cpu(), counts]).to(_device())
    dist.all_reduce(both)
    both = both.cpu()
    meter.loss_sum, meter.correct_clean, meter.correct_adv = (both[i].to(meter.loss_sum) for i in range(3))
    meter.n, meter.n_clean, meter.n_adv = (int(both[i]) for i in range(3, 6))
    meter.eps_sum = float(both[6])


def earliest_bad(bad: Optional[tuple[int, float]]) -> Optional[tuple[int, float]]:
    """The earliest (step, loss) of a non-finite loss over all ranks (``bad``: this rank's, or
    None), so that every rank stops at the same step with the same message (one all-gather)."""
    mine = torch.tensor([-1.0 if bad is None else float(bad[0]), 0.0 if bad is None else bad[1]],
                        dtype=torch.float64, device=_device())
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    found = [(int(t[0]), float(t[1])) for t in (e.cpu() for e in every) if t[0] >= 0]
    return min(found) if found else None


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (one all-reduce)."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class DistributedSignalStop(SignalStop):
    """:class:`SignalStop` for DDP: at every optimizer step and epoch end the ranks agree (one
    all-reduce) whether any of them got SIGTERM / SIGINT; then all save (rank 0 writes) and stop."""

    def on_batch_end(self, trainer, batch):
        if batch.optimizer_step and any_rank(self.requested is not None):
            self.requested = self.requested or "SIGTERM (on another rank)"
            self._stop(trainer, batch.epoch, batch.batch + 1)

    def on_epoch_end(self, trainer, epoch, metrics):
        if any_rank(self.requested is not None):
            self.requested = self.requested or "SIGTERM (on another rank)"
            self._stop(trainer, epoch + 1, 0)

    def on_exception(self, trainer, exc):
        """Keep the handlers: the process ends with this exception, and torchrun's SIGTERM (sent
        once a peer exits) must not cut rank 0 ending its run (a second signal still interrupts)."""

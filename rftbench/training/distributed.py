"""Several devices for one run: torch DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc_per_node N -m rftbench train CONFIG`` (or ``rftbench train CONFIG --nproc N``,
which starts torchrun) runs N ranks; :func:`init_distributed` joins them (NCCL on GPUs, gloo on
CPU). The data order stays a function of (seed, epoch): every global batch of the
single-process run (``data.batch_size`` samples) is cut into N contiguous slices, one per rank
(:class:`ShardedBatchSampler`), so the ranks together see exactly the batches one process would,
and DDP's gradient average is the single-process gradient. Each rank attacks its own slice.
BatchNorm as ``train.batchnorm`` says: ``local``, per-rank statistics (the default); ``sync`` converts it to
SyncBatchNorm (then the statistics are those of the global batch; GPUs only), and
``frozen`` keeps BatchNorm in eval mode (same numbers with any number of ranks). Only rank 0 logs to MLflow
and writes checkpoints; the state holds the position in global batches, so a run resumes with
any number of ranks. A SIGTERM on any rank stops every rank at the next optimizer step
(:class:`DistributedSignalStop`); a rank that dies makes torchrun stop the others.
With one process nothing here runs: the single-process path is unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist

from .callbacks import SignalStop


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
    from ..setup import resolve_device

    cuda = resolve_device(device_name).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


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
            chunk = order[k * bs:k * bs + self.plan.size_of(k)]
            n = len(chunk)
            yield chunk[self.rank * n // self.world:(self.rank + 1) * n // self.world]

    def __len__(self) -> int:
        return self.plan.steps_per_epoch - self.first_batch


def wrap_model(model: Any, device: torch.device, sync_batchnorm: bool) -> torch.nn.parallel.DistributedDataParallel:
    """``model`` (a PixelModel) for the objective's forward: its BatchNorm layers converted to
    SyncBatchNorm first when asked (in place, the same parameters), then wrapped in DDP."""
    if sync_batchnorm:
        if device.type != "cuda":
            from ..errors import ConfigError

            raise ConfigError("train.batchnorm: sync needs GPUs (SyncBatchNorm runs on NCCL only); on CPU use "
                              "train.batchnorm: local (per-process statistics) or frozen.")
        model.net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.net)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


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

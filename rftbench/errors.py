"""Errors that rftbench raises for bad input.

Every error a user can cause derives from :class:`RftbenchError`; the CLI prints its message
(which says what was wrong and what to do) and exits with status 2, without a traceback.
"""
from __future__ import annotations


class RftbenchError(Exception):
    """Base class of every user-facing rftbench error."""


class UnknownNameError(RftbenchError, KeyError):
    """A registry look-up named something that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(RftbenchError):
    """A name was registered twice."""


class ConfigError(RftbenchError, ValueError):
    """A configuration file or value is malformed."""


class OfflineError(RftbenchError):
    """Something must be downloaded but the network is off; the message says where to put it."""


class DataError(RftbenchError):
    """A dataset is missing, partial or corrupt."""


class CheckpointError(RftbenchError):
    """A checkpoint is missing, corrupt or does not match the model."""


class TrainingDivergedError(RftbenchError):
    """The training loss became NaN or infinite."""


class ScheduleDefinitionError(RftbenchError):
    """A schedule plugin is malformed (bad parameter declaration, not a Schedule, ...)."""


class ObjectiveDefinitionError(RftbenchError):
    """An objective plugin is malformed (bad parameter declaration, not an Objective, ...)."""


class RecordError(RftbenchError):
    """An evaluation record is malformed, or records cannot be merged or compared."""


class TrackingError(RftbenchError):
    """The tracking store (MLflow) cannot be reached or refused an operation."""


class LeaderboardError(RftbenchError):
    """The leaderboard, report or export cannot be built as asked (no such experiment, no records, ...)."""


class DiskFullError(RftbenchError, OSError):
    """A write failed because the filesystem is full (ENOSPC) or over quota; nothing was left half written."""


class RunFinishedError(RftbenchError):
    """``--resume`` named a run that already ended FINISHED: there is nothing to resume."""


class TuneError(RftbenchError):
    """A study cannot run as asked (reused name with another space, a sampler that cannot
    handle the space, an objective that is not recorded, ...)."""


class LauncherError(RftbenchError):
    """A launcher cannot start: its extra is not installed, its cluster does not answer, or its
    options make no sense together."""


class RankFailedError(RftbenchError):
    """Another rank of this DDP job failed with an error of its own (it recorded it in the run
    directory before it exited), so this rank stopped too: the run ends FAILED with that error."""


class JobInterruptedError(LauncherError):
    """A launched call stopped at a signal (SIGTERM from ``scancel``, SLURM's time-limit or
    preemption signal, a Ray cancel) with its state saved: the run ends KILLED and the next sweep
    resumes it. An ``Exception`` (unlike the ``KeyboardInterrupt`` the run raised), so that the
    engine records the job as ended."""

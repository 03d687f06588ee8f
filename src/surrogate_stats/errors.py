"""Error and warning classes of surrogate_stats.

Every error the library raises on purpose derives from :class:`SurrogateStatsError`, and each
also subclasses the builtin a user would expect, so ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "SurrogateStatsError",
    "InvalidInput",
    "InvalidWorkspace",
    "UnknownPatch",
    "InvalidArtifact",
    "FitFailure",
    "MissingDependency",
    "TaskFailure",
    "SchedulerUnreachable",
    "MissingChunk",
    "ExtrapolationWarning",
    "ExtrapolationError",
]


class SurrogateStatsError(Exception):
    """Base class of every error raised by surrogate_stats."""


class InvalidInput(SurrogateStatsError, ValueError):
    """An argument has the wrong shape, type or value (NaN, out of range, ...)."""


class InvalidWorkspace(InvalidInput):
    """A workspace or patch file is not valid JSON or fails pyhf's schema."""


class UnknownPatch(InvalidInput, KeyError):
    """A patch name is not in the patchset; the message lists the available names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class InvalidArtifact(SurrogateStatsError, ValueError):
    """A surrogate artifact is missing, corrupt, tampered with or of an unknown schema."""


class FitFailure(SurrogateStatsError, RuntimeError):
    """An exact (pyhf) fit did not converge after all retries."""


class MissingDependency(SurrogateStatsError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class TaskFailure(SurrogateStatsError, RuntimeError):
    """A chunk of work run by an executor raised, or the worker running it died.

    Attributes:
        chunk_id: the id of the chunk (the first one, where several failed).
        worker_traceback: the traceback text from the worker, or None.
    """

    def __init__(self, message: str, *, chunk_id: str | None = None,
                 worker_traceback: str | None = None):
        super().__init__(message)
        self.chunk_id = chunk_id
        self.worker_traceback = worker_traceback


class SchedulerUnreachable(SurrogateStatsError, ConnectionError):
    """No connection to a Dask scheduler at the given address within the timeout."""


class MissingChunk(SurrogateStatsError, KeyError):
    """A chunk id is not in a chunk store (never finished, or its file was corrupt)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class ExtrapolationWarning(UserWarning):
    """A surrogate was evaluated outside the domain it was trained on."""


class ExtrapolationError(InvalidInput):
    """A surrogate was evaluated outside its trained domain with ``on_extrapolation='raise'``."""

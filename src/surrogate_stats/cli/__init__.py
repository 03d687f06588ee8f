"""The ``surrogate-stats`` command line (thin commands over the library)."""

from surrogate_stats.cli._main import main

__all__ = ["main"]

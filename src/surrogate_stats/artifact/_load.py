"""``load_surrogate``: read, verify and dispatch on the artifact's ``kind``."""

from __future__ import annotations

import importlib
from pathlib import Path

from surrogate_stats.artifact._format import read_artifact
from surrogate_stats.artifact._runtime import _check_threads
from surrogate_stats.errors import InvalidArtifact, InvalidInput, SurrogateStatsError

__all__ = ["load_surrogate"]

# kind -> "module:function(meta, graphs, arrays, **options)"; imported only when used
LOADERS = {
    "profile_likelihood": "surrogate_stats.likelihood._export:from_artifact",
    "yield_likelihood": "surrogate_stats.likelihood._yields_export:from_artifact",
    "matrix_element": "surrogate_stats.matrix_element._export:from_artifact",
    "correction_flow": "surrogate_stats.flows._artifact:from_artifact",
    "flow_unfolder": "surrogate_stats.unfold._flow_artifact:from_artifact",
}


def load_surrogate(path: str | Path, *, on_extrapolation: str = "warn",
                   threads: int | None = None):
    """Load a published surrogate; needs only numpy and onnxruntime.

    Every file's SHA-256 and the metadata's own checksum are verified, the ONNX graph's inputs
    and outputs are checked against the metadata, and the stored self-check pairs are
    re-evaluated (with the ONNX graph and the fast numpy path) before the object is returned.

    A *file* whose name ends in ``.onnx`` is read as an Open Library of Learned Likelihoods
    (OLLL v0.1) file, the format SModelS reads (:func:`surrogate_stats.likelihood._olll.load_olll`,
    ``docs/olll.md``): the result has the API of every yield-parametrised surrogate (``bins``,
    ``nll``, ``tmu``, ``upper_limit``). Directories are this project's artifacts.

    Args:
        path: the artifact directory (with ``metadata.json`` and ``model.onnx``), or an OLLL
            ``.onnx`` file.
        on_extrapolation: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` for inputs outside
            the trained domain.
        threads: onnxruntime intra-op threads per session (None: 1, so that many threads or
            processes do not oversubscribe the cores; 0: onnxruntime's default, one per
            physical core).

    The directory is treated as untrusted (``docs/security.md``): nothing outside it is read,
    ONNX graphs with external data, custom domains or functions are refused, and any other
    exception a kind's loader raises on malformed metadata is turned into
    :class:`InvalidArtifact`.

    Raises:
        InvalidArtifact: the artifact is missing, corrupt, tampered with, refused by a
            structural check, or of an unknown schema version or kind.
        InvalidInput: ``on_extrapolation`` or ``threads`` is not valid.
    """
    if on_extrapolation not in ("warn", "raise", "ignore"):
        raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                           f"{on_extrapolation!r}")
    _check_threads(threads)
    if Path(path).suffix.lower() == ".onnx" and not Path(path).is_dir():
        return _load_olll(path, on_extrapolation=on_extrapolation, threads=threads)
    meta, graphs, arrays = read_artifact(path)
    kind = meta["kind"]
    if kind not in LOADERS:
        raise InvalidArtifact(f"unknown artifact kind {kind!r}; this version of "
                              f"surrogate_stats knows {sorted(LOADERS)}")
    module, func = LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(module), func)
    try:
        return loader(meta, graphs, arrays, on_extrapolation=on_extrapolation, threads=threads)
    except SurrogateStatsError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        # a loader that trips over malformed (but correctly hashed) metadata: the artifact's
        # fault, reported as such rather than as a foreign exception
        raise InvalidArtifact(f"{str(path)!r}: the {kind!r} loader could not use this "
                              f"artifact's metadata or arrays: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from exc


def _load_olll(path, *, on_extrapolation: str, threads: int | None):
    from surrogate_stats.likelihood._olll import load_olll

    try:
        return load_olll(path, on_extrapolation=on_extrapolation, threads=threads)
    except SurrogateStatsError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
        raise InvalidArtifact(f"{str(path)!r}: the OLLL loader could not use this file: "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from exc

"""Lazy imports of optional dependencies with a helpful message."""

from __future__ import annotations

import importlib
from types import ModuleType

from surrogate_stats.errors import MissingDependency

_EXTRA = {
    "jax": "train",
    "optax": "train",
    "equinox": "train",
    "pyhf": "train",
    "onnx": "train",
    "matplotlib": "plots",
    "tqdm": "train",
    "scipy": "train",
    "pandas": "io",
    "pyarrow": "io",
    "uproot": "io",
    "pylhe": "test",
    "sklearn": "flows",
    "torch": "nflows",
    "nflows": "nflows",
    "dask": "dask",
    "distributed": "dask",
}


def optional_import(name: str) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependency` naming the extra that provides it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        extra = _EXTRA.get(top, "all")
        raise MissingDependency(
            f"{name!r} is needed for this operation but is not installed; "
            f"install it with: pip install 'surrogate_stats[{extra}]'"
        ) from exc

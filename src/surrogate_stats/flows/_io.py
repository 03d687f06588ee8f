"""Reading and writing event tables: parquet, csv and ROOT trees (uproot)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput

__all__ = ["read_table", "write_table"]

_PARQUET = (".parquet", ".pq")


def _fmt(path: Path) -> str:
    s = path.suffix.lower()
    if s in _PARQUET:
        return "parquet"
    if s == ".csv":
        return "csv"
    if s == ".root":
        return "root"
    raise InvalidInput(f"{str(path)!r}: unknown table format {s!r}; use .parquet, .csv or .root")


def read_table(path, *, tree: str | None = None):
    """A pandas DataFrame of every column in ``path`` (``tree``: the TTree name in ROOT files;
    needed only when the file has several)."""
    pd = optional_import("pandas")
    path = Path(path)
    fmt = _fmt(path)
    if not path.is_file():
        raise InvalidInput(f"{str(path)!r} does not exist")
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path)
    uproot = optional_import("uproot")
    with uproot.open(path) as f:
        trees = sorted({k.split(";")[0] for k, v in f.classnames().items()
                        if v in ("TTree", "TNtuple", "ROOT::RNTuple")})
        if tree is None:
            if len(trees) != 1:
                raise InvalidInput(f"{str(path)!r} holds the trees {trees}; choose one with "
                                   "--tree")
            tree = trees[0]
        if tree not in trees:
            raise InvalidInput(f"{str(path)!r} has no tree {tree!r}; it has {trees}")
        arrays = f[tree].arrays(library="np")
    cols = {}
    for k, v in arrays.items():
        if v.dtype == object:
            raise InvalidInput(f"branch {k!r} of {str(path)!r} is jagged; flatten it first")
        cols[k] = v
    return pd.DataFrame(cols)


def write_table(df, path, *, tree: str = "events") -> None:
    """Write ``df`` to ``path`` (format from the suffix)."""
    path = Path(path)
    fmt = _fmt(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    elif fmt == "csv":
        df.to_csv(path, index=False)
    else:
        uproot = optional_import("uproot")
        cols = {c: np.asarray(df[c]) for c in df.columns}
        with uproot.recreate(path) as f:
            t = f.mktree(tree, {c: v.dtype for c, v in cols.items()})
            t.extend(cols)


def columns(df, names, what) -> np.ndarray:
    """``df[names]`` as float64, or InvalidInput naming the missing columns."""
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise InvalidInput(f"{what} lacks the columns {missing}; it has {list(df.columns)}")
    return np.column_stack([np.asarray(df[n], np.float64) for n in names]) if names else \
        np.zeros((len(df), 0))

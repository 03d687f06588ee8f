"""Run many independent chunks of work on local processes or a Dask cluster, resumably.

The unit of work is a *chunk*: ``func(shared, task) -> {name: array}``, where ``func`` is named
``"package.module:function"`` (imported in each worker), ``task`` is a small per-chunk payload
and ``shared`` one larger payload common to all chunks (a workspace spec, say). Every finished
chunk is written to a :class:`ChunkStore` (one ``.npz`` per chunk) by the calling process as
soon as its result arrives, so a run that is interrupted (Ctrl-C, a killed job, a failing
chunk) loses at most the chunks in flight, and rerunning it with the same store computes only
the rest::

    store = ChunkStore("out/labels", fingerprint=fingerprint([spec, settings]))
    results = run_chunks("mypkg.labels:label_chunk", {"c000": {...}, "c001": {...}},
                         shared=spec, store=store, config=ExecutorConfig(kind="local"))

Executors (:class:`ExecutorConfig`):

* ``"local"`` (default): a pool of worker processes started with ``spawn`` (never ``fork``: a
  forked copy of a process running JAX threads can deadlock). ``shared`` is handed to each
  worker once, by the pool initializer. With more than one worker, each is limited to
  ``cores // n_workers`` BLAS/OpenMP threads (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS`` where unset, and threadpoolctl where installed) and, at one thread each,
  XLA's CPU backend to a single Eigen thread (``--xla_cpu_multi_thread_eigen=false`` appended
  to ``XLA_FLAGS``), so that the workers share the cores instead of oversubscribing them.
  Workers ignore SIGINT; Ctrl-C in the caller terminates them. As with any spawn pool, a
  script calling :func:`run_chunks` needs the ``if __name__ == "__main__":`` guard (workers
  import the caller's main module).
* ``"dask"``: tasks on a running ``distributed`` scheduler (``tcp://HOST:PORT``); ``shared``
  is scattered to every worker once per call (``Client.scatter(..., broadcast=True)``) and
  tasks refer to it. The workers need surrogate_stats (and the module of ``func``) installed;
  their thread settings are the cluster's business (``dask worker --nthreads``).
* ``"serial"``: in this process, one chunk after the other (tests, debugging, profiling).

Workers memoise expensive setup built from ``shared`` (a compiled JAX model) with
:func:`worker_cache`, keyed by the digest of ``shared``.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import importlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import queue
import re
import secrets
import signal
import threading
import time
import traceback
import warnings
import zipfile
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.artifact._format import _fsync_dir, _host, _pid_alive
from surrogate_stats.artifact._format import write_file_atomic as _write_atomic
from surrogate_stats.errors import (
    InvalidInput,
    MissingChunk,
    MissingDependency,
    SchedulerUnreachable,
    TaskFailure,
)

__all__ = [
    "KINDS",
    "ChunkStore",
    "ExecutorConfig",
    "add_executor_arguments",
    "fingerprint",
    "run_chunks",
    "worker_cache",
]

T = TypeVar("T")
KINDS = ("local", "dask", "serial")
STORE_SCHEMA = "surrogate_stats.chunks"
STORE_VERSION = 1
MANIFEST = "manifest.json"
WORKER_CACHE_SIZE = 4  # entries of worker_cache kept per worker process (least recently used go)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ARRAY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
_FUNC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
                   r":[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ADDRESS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^\s/]+$")
_TMP = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>[0-9]{1,10})-(?P<host>[0-9a-f]{8})-[0-9a-f]+$")
_INPUTS = "__inputs_sha256__"  # .npz member: digest of the shared and task payloads of a chunk


# -- configuration --------------------------------------------------------------------------
def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ExecutorConfig:
    """Where chunks run.

    Attributes:
        kind: ``"local"`` (worker processes on this machine), ``"dask"`` (a running Dask
            distributed scheduler) or ``"serial"`` (in this process).
        n_workers: local worker processes; None: one per two CPU cores (JAX threads each
            worker itself), at least one. Ignored by the other kinds.
        scheduler: address of the Dask scheduler, ``tcp://HOST:PORT``; needed with
            ``kind="dask"`` and only with it.
        connect_timeout: seconds to wait for the Dask scheduler before giving up.
    """

    kind: str = "local"
    n_workers: int | None = None
    scheduler: str | None = None
    connect_timeout: float = 10.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidInput(f"executor kind must be one of {KINDS}; got {self.kind!r}")
        n = self.n_workers
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidInput(f"n_workers must be a whole number >= 1 (or None: one worker "
                               f"per two CPU cores); got {n!r}")
        if self.kind == "dask":
            if self.scheduler is None:
                raise InvalidInput(
                    "the dask executor needs the address of a running scheduler: pass "
                    "--scheduler tcp://HOST:PORT (ExecutorConfig(kind='dask', scheduler=...)); "
                    "start one with `dask scheduler` and workers with "
                    "`dask worker tcp://HOST:PORT`")
            if not isinstance(self.scheduler, str) or not _ADDRESS.match(self.scheduler):
                raise InvalidInput(f"scheduler must be an address like tcp://HOST:PORT; got "
                                   f"{self.scheduler!r}")
        elif self.scheduler is not None:
            raise InvalidInput(f"scheduler={self.scheduler!r} is only used by the dask "
                               "executor: add --executor dask (kind='dask') or drop --scheduler")
        t = self.connect_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                math.isfinite(t) and t > 0):
            raise InvalidInput(f"connect_timeout must be a positive number of seconds; got "
                               f"{t!r}")

    @property
    def workers(self) -> int:
        """The number of local worker processes this config asks for."""
        return self.n_workers if self.n_workers is not None else max(1, _cpu_count() // 2)

    @classmethod
    def from_args(cls, args) -> ExecutorConfig:
        """The config given by the flags of :func:`add_executor_arguments`."""
        return cls(kind=args.executor, n_workers=args.workers, scheduler=args.scheduler)


def add_executor_arguments(parser) -> None:
    """Add ``--executor``, ``--scheduler`` and ``--workers`` to an argparse parser."""
    parser.add_argument("--executor", choices=KINDS, default="local",
                        help="where the chunks run: local processes (default), a Dask cluster, "
                             "or serially in this process")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="address of the Dask scheduler (with --executor dask)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per two CPU cores)")


# -- payload digests ------------------------------------------------------------------------
def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.fields is not None:
            raise TypeError(f"numpy arrays of dtype {obj.dtype} cannot be fingerprinted")
        a = np.asarray(obj, order="C")
        return {"__ndarray__": [a.dtype.str, list(a.shape),
                                _sha256(a.tobytes())]}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"an object of type {type(obj).__name__}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of a JSON-like object: dicts (sorted keys), lists, tuples, strings, numbers,
    booleans, None and numpy arrays (by dtype, shape and bytes).

    Raises:
        InvalidInput: ``obj`` holds anything else.
    """
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_encode,
                          allow_nan=True, ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"payloads must be JSON-like (dicts with string keys, lists, str, "
                           f"int, float, bool, None) or numpy arrays; cannot fingerprint "
                           f"{exc}") from None
    return _sha256(text.encode())


# -- result arrays --------------------------------------------------------------------------
def _normalise(arrays: Any, where: str) -> dict[str, np.ndarray]:
    """Arrays as stored: floats as float64, integers and booleans kept, native byte order."""
    if not isinstance(arrays, Mapping):
        raise InvalidInput(f"{where}: expected a dict of numeric arrays; got "
                           f"{type(arrays).__name__}")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise InvalidInput(f"{where}: array names must start with a letter and hold only "
                               f"letters, digits, '_', '.', '-'; got {name!r}")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{where}: {name!r} is not an array ({exc})") from None
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float64, copy=False)
        elif arr.dtype.kind not in "biu" or arr.dtype.fields is not None:
            raise InvalidInput(f"{where}: array {name!r} has dtype {arr.dtype}; only float "
                               "(stored as float64), integer and boolean arrays are stored")
        out[name] = np.asarray(arr, dtype=arr.dtype.newbyteorder("="), order="C")
    return out


def _npz_bytes(arrays: dict[str, np.ndarray], inputs: str | None) -> bytes:
    buf = io.BytesIO()
    members = dict(arrays)
    if inputs is not None:
        members[_INPUTS] = np.array(inputs)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(members):
            member = io.BytesIO()
            np.lib.format.write_array(member, members[name], allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)),
                        member.getvalue())
    return buf.getvalue()


class _Corrupt(Exception):
    pass


def _parse_npz(blob: bytes) -> tuple[dict[str, np.ndarray], str | None]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            members = {name: npz[name] for name in npz.files}
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error, KeyError,
            NotImplementedError, RuntimeError) as exc:
        raise _Corrupt(f"{type(exc).__name__}: {exc}") from None
    inputs = members.pop(_INPUTS, None)
    if inputs is not None:
        if inputs.dtype.kind != "U" or inputs.shape != ():
            raise _Corrupt(f"member {_INPUTS} is not a string")
        inputs = str(inputs)
    for name, arr in members.items():
        if not _ARRAY_NAME.match(name) or arr.dtype.kind not in "fbiu":
            raise _Corrupt(f"member {name!r} of dtype {arr.dtype} is not a stored array")
    return members, inputs


# -- the store ------------------------------------------------------------------------------
def _check_id(chunk_id: Any) -> str:
    if not isinstance(chunk_id, str) or not _ID.match(chunk_id):
        raise InvalidInput(f"chunk ids must be 1-128 letters, digits, '_', '.', '-' starting "
                           f"with a letter or digit (they name files); got {chunk_id!r}")
    return chunk_id


class ChunkStore:
    """A directory of finished chunk results: one ``ID.npz`` per chunk, plus ``manifest.json``.

    The manifest holds a fingerprint of the run (a string, e.g. :func:`fingerprint` of the
    inputs and settings that determine the results); opening an existing store with another
    fingerprint is refused. Chunk files are written atomically (a fsynced temporary file
    renamed into place), hold only numeric arrays (loaded without pickle) and, written by
    :func:`run_chunks`, the digest of the inputs they were computed from. A chunk file that
    cannot be read (torn by a crash, corrupt) counts as not done: it is removed, with a warning.
    Temporary files left by killed writers are removed on opening.

    Args:
        directory: the store; created if missing. An existing directory must be a store or
            empty.
        fingerprint: identifies the run whose chunks the store holds.

    Raises:
        InvalidInput: the directory holds another run's store, or something other than a store.
    """

    def __init__(self, directory: str | Path, fingerprint: str):
        if not isinstance(fingerprint, str) or not fingerprint:
            raise InvalidInput(f"fingerprint must be a non-empty string; got {fingerprint!r}")
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        d, manifest = self.directory, self.directory / MANIFEST
        if d.exists() and not d.is_dir():
            raise InvalidInput(f"{str(d)!r} is not a directory; chunk stores are directories "
                               "(choose another --out)")
        if manifest.exists():
            try:
                head = json.loads(manifest.read_bytes())
                ok = isinstance(head, dict) and head.get("schema") == STORE_SCHEMA
            except (ValueError, UnicodeDecodeError):
                ok = False
            if not ok:
                raise InvalidInput(f"{str(manifest)!r} is not a chunk-store manifest; delete "
                                   f"{str(d)!r} or choose another --out")
            if head.get("fingerprint") != fingerprint:
                raise InvalidInput(
                    f"{str(d)!r} holds the chunks of a different run (other inputs or "
                    f"settings): its fingerprint is {head.get('fingerprint')!r}, this run's is "
                    f"{fingerprint!r}; delete {str(d)!r} to start afresh, or choose another "
                    "--out")
        else:
            if d.exists() and any(not _TMP.match(p.name) for p in d.iterdir()):
                raise InvalidInput(f"{str(d)!r} exists, is not empty and is not a chunk store "
                                   f"(no {MANIFEST}); choose another --out or an empty "
                                   "directory")
            d.mkdir(parents=True, exist_ok=True)
            _write_atomic(manifest, json.dumps(
                {"schema": STORE_SCHEMA, "schema_version": STORE_VERSION,
                 "fingerprint": fingerprint}, indent=1).encode() + b"\n")
        self._remove_stale_temporaries()

    def __repr__(self) -> str:
        return f"ChunkStore({str(self.directory)!r}, {len(self.done())} chunks)"

    def _path(self, chunk_id: str) -> Path:
        return self.directory / f"{_check_id(chunk_id)}.npz"

    def _remove_stale_temporaries(self) -> None:
        for entry in os.scandir(self.directory):
            m = _TMP.match(entry.name)
            if m and m["host"] == _host() and not _pid_alive(int(m["pid"])):
                Path(entry.path).unlink(missing_ok=True)

    def done(self) -> set[str]:
        """Ids of the chunks with a result file (see :meth:`get` for unreadable ones)."""
        return {e.name[:-4] for e in os.scandir(self.directory)
                if e.name.endswith(".npz") and _ID.match(e.name[:-4]) and e.is_file()}

    def put(self, chunk_id: str, arrays: Mapping[str, Any], *, inputs: str | None = None) -> None:
        """Store a chunk's arrays atomically (replacing an earlier result of that id).

        Args:
            chunk_id: 1-128 letters, digits, ``_.-``; names the file.
            arrays: name -> float (stored as float64), integer or boolean array.
            inputs: digest of the inputs the chunk was computed from (kept with it).
        """
        path = self._path(chunk_id)
        data = _npz_bytes(_normalise(arrays, f"chunk {chunk_id!r}"), inputs)
        _write_atomic(path, data)

    def get(self, chunk_id: str) -> dict[str, np.ndarray]:
        """The stored arrays of a chunk.

        Raises:
            MissingChunk: the chunk is not stored, or its file was unreadable (then it is
                removed, with a RuntimeWarning, so that the chunk is recomputed).
        """
        return self._read(chunk_id)[0]

    def _read(self, chunk_id: str) -> tuple[dict[str, np.ndarray], str | None]:
        path = self._path(chunk_id)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise MissingChunk(f"chunk {chunk_id!r} is not in {str(self.directory)!r}") from None
        try:
            return _parse_npz(blob)
        except _Corrupt as exc:
            warnings.warn(f"{str(path)!r} is torn or corrupt ({exc}); removed it, the chunk "
                          "will be recomputed", RuntimeWarning, stacklevel=3)
            path.unlink(missing_ok=True)
            raise MissingChunk(f"chunk {chunk_id!r} in {str(self.directory)!r} was unreadable "
                               "and has been removed") from None

    def clear(self) -> None:
        """Remove every chunk (the store and its fingerprint stay)."""
        for entry in os.scandir(self.directory):
            tmp = _TMP.match(entry.name)
            if (entry.name.endswith(".npz") and _ID.match(entry.name[:-4])) or (
                    tmp and tmp["name"].endswith(".npz")):
                Path(entry.path).unlink(missing_ok=True)
        _fsync_dir(self.directory)


# -- what runs in a worker ------------------------------------------------------------------
_CONTEXT = threading.local()  # .state = (shared digest, cache) while a task runs
_PROCESS_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.RLock()
_WORKER: dict = {}  # a local pool worker's shared payload and its digest (pool initializer)


def worker_cache(key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, memoised in this worker process for the current shared payload.

    Call it from a task function to keep expensive setup (a compiled JAX model built from
    ``shared``) across the chunks a worker runs: the entry is keyed by ``key`` and the digest
    of the shared payload, so another payload never sees it. A worker keeps the
    ``WORKER_CACHE_SIZE`` most recently used entries (Dask workers outlive one run). The lock
    held while building is per process: threads of a Dask worker wait for one build. With the
    serial executor the cache lasts one :func:`run_chunks` call; outside a task ``build()`` is
    simply called.
    """
    state = getattr(_CONTEXT, "state", None)
    if state is None:
        return build()
    digest, cache = state
    full_key = (digest, key)
    with _CACHE_LOCK:
        if full_key in cache:
            cache.move_to_end(full_key)
            return cache[full_key]
        value = build()
        cache[full_key] = value
        while len(cache) > WORKER_CACHE_SIZE:
            cache.popitem(last=False)
        return value


@functools.lru_cache(maxsize=64)
def _resolve(func: str) -> Callable:
    module, _, attr = func.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{func} is not callable")
    return obj


def _call_task(func: str, digest: str, shared: Any, chunk_id: str, task: Any,
               cache: OrderedDict) -> dict[str, np.ndarray]:
    _CONTEXT.state = (digest, cache)
    try:
        out = _resolve(func)(shared, task)
    finally:
        _CONTEXT.state = None
    return _normalise(out, f"{func} returned for chunk {chunk_id!r}")


def _run_task(func: str, digest: str, shared: Any, chunk_id: str, task: Any) -> tuple:
    """A task in a worker: ``("ok", arrays)`` or ``("error", type, message, traceback)``.

    Errors travel as strings: an exception class of the task's libraries may not unpickle
    in the caller (or need a heavy import there).
    """
    try:
        return ("ok", _call_task(func, digest, shared, chunk_id, task, _PROCESS_CACHE))
    except Exception as exc:
        return ("error", f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc),
                traceback.format_exc())


def _limit_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()
    try:  # numpy's BLAS is loaded already (importing this module): limit it now
        _WORKER["blas_limit"] = importlib.import_module("threadpoolctl").threadpool_limits(n)
    except ImportError:
        pass


def _init_local_worker(shared: Any, digest: str, threads: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    if threads is not None:
        _limit_threads(threads)
    _WORKER["shared"], _WORKER["digest"] = shared, digest


def _run_local(func: str, chunk_id: str, task: Any) -> tuple:
    return _run_task(func, _WORKER["digest"], _WORKER["shared"], chunk_id, task)


# -- backends (in the caller) ---------------------------------------------------------------
def _failure(chunk_id: str, outcome: tuple, where: str) -> TaskFailure:
    _, kind, message, tb = outcome
    err = TaskFailure(f"chunk {chunk_id!r} failed {where}: {kind}: {message}",
                      chunk_id=chunk_id, worker_traceback=tb)
    err.add_note("worker traceback:\n" + tb.rstrip())
    return err


class _SerialBackend:
    where = "in this process"

    def __init__(self, func, shared, digest):
        self.func, self.shared, self.digest = func, shared, digest
        self.cache: OrderedDict = OrderedDict()  # lives as long as this run

    def window(self) -> int:
        return 1

    def submit(self, chunk_id, task):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            fut.set_result(("ok", _call_task(self.func, self.digest, self.shared, chunk_id,
                                             task, self.cache)))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    def wait(self, futures):
        return set(futures)

    def outcome(self, fut, chunk_id):
        exc = fut.exception()
        if exc is None:
            return fut.result()[1]
        err = TaskFailure(f"chunk {chunk_id!r} failed {self.where}: "
                          f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",
                          chunk_id=chunk_id)
        err.__cause__ = exc
        return err

    def close(self, abort):
        self.cache.clear()


class _LocalBackend:
    def __init__(self, func, shared, digest, n_workers):
        self.func, self.n = func, n_workers
        threads = None if n_workers == 1 else max(1, _cpu_count() // n_workers)
        self.where = f"in a local worker process ({n_workers} worker(s))"
        self.pool = concurrent.futures.ProcessPoolExecutor(
            n_workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_local_worker, initargs=(shared, digest, threads))

    def window(self) -> int:
        return 2 * self.n

    def submit(self, chunk_id, task):
        return self.pool.submit(_run_local, self.func, chunk_id, task)

    def wait(self, futures):
        done, _ = concurrent.futures.wait(futures, timeout=1.0,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return done

    def outcome(self, fut, chunk_id):
        try:
            result = fut.result()
        except concurrent.futures.process.BrokenProcessPool:
            return TaskFailure(f"a local worker process died (killed by a signal, or out of "
                               f"memory?) with chunk {chunk_id!r} running or queued; if memory "
                               "ran out, rerun with fewer workers or smaller chunks",
                               chunk_id=chunk_id)
        except Exception as exc:  # e.g. the task could not be pickled
            return TaskFailure(f"chunk {chunk_id!r} could not be run {self.where}: "
                               f"{type(exc).__name__}: {exc}", chunk_id=chunk_id)
        if result[0] == "ok":
            return result[1]
        return _failure(chunk_id, result, self.where)

    def close(self, abort):
        if abort:  # Ctrl-C: stop the workers now rather than after their chunks
            processes = getattr(self.pool, "_processes", None) or {}
            for proc in list(processes.values()):
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskBackend:
    def __init__(self, func, shared, digest, config: ExecutorConfig, desc: str):
        distributed = optional_import("distributed")  # MissingDependency: the dask extra
        self.func, self.digest = func, digest
        self.where = f"on the Dask cluster at {config.scheduler}"
        try:
            self.client = distributed.Client(config.scheduler,
                                                  timeout=config.connect_timeout,
                                                  set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnreachable(
                f"could not connect to the Dask scheduler at {config.scheduler} within "
                f"{config.connect_timeout:g} s ({exc}); check that `dask scheduler` runs "
                "there and that the address and port are reachable from this machine, or "
                "use --executor local") from None
        self.futures: set = set()
        self.finished: queue.Queue = queue.Queue()
        try:  # a list, so that a dict payload is scattered as one object
            self.shared = self.client.scatter([shared], broadcast=True, hash=False)[0]
        except BaseException:
            self.client.close()
            raise
        self.prefix = re.sub(r"[^A-Za-z0-9_]", "_", desc) or "chunk"
        self.token = secrets.token_hex(4)
        self._threads, self._checked = 1, -math.inf

    def window(self) -> int:
        now = time.monotonic()
        if now - self._checked > 5.0:  # workers may come and go
            try:
                self._threads = sum(self.client.nthreads().values())
            except (OSError, TimeoutError):
                pass  # the futures will tell what went wrong
            self._checked = now
        return max(2, 2 * self._threads)

    def submit(self, chunk_id, task):
        fut = self.client.submit(_run_task, self.func, self.digest, self.shared, chunk_id, task,
                                 key=f"{self.prefix}-{chunk_id}-{self.token}", pure=False)
        self.futures.add(fut)
        fut.add_done_callback(self.finished.put)  # called in a thread of the client
        return fut

    def wait(self, futures):
        try:
            done = {self.finished.get(timeout=1.0)}
        except queue.Empty:
            return set()
        while True:
            try:
                done.add(self.finished.get_nowait())
            except queue.Empty:
                return done

    def outcome(self, fut, chunk_id):
        self.futures.discard(fut)
        try:
            result = fut.result()
        except Exception as exc:  # KilledWorker, CancelledError, ...
            return TaskFailure(f"chunk {chunk_id!r} could not be run {self.where}: "
                               f"{type(exc).__name__}: {exc}", chunk_id=chunk_id)
        finally:
            fut.release()
        if result[0] == "ok":
            return result[1]
        return _failure(chunk_id, result, self.where)

    def close(self, abort):
        try:  # best effort: closing the client releases everything it holds anyway
            self.client.cancel([*self.futures, self.shared])
        except Exception:
            pass
        finally:
            self.client.close()


# -- the driver -----------------------------------------------------------------------------
def _func_name(func: str | Callable) -> str:
    if callable(func) and not isinstance(func, str):
        module = getattr(func, "__module__", None)
        name = getattr(func, "__qualname__", "")
        if not module or "<" in name:
            raise InvalidInput(f"{func!r} cannot be imported by name in a worker; pass a "
                               "module-level function or a 'package.module:function' string")
        func = f"{module}:{name}"
    if not isinstance(func, str) or not _FUNC.match(func):
        raise InvalidInput(f"func must name a function as 'package.module:function'; got "
                           f"{func!r}")
    module = func.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise InvalidInput(f"func {func!r}: module {module!r} cannot be imported here "
                           "(workers import it by this name)")
    return func


def _progress(progress: bool, total: int, initial: int, desc: str):
    if progress:
        try:
            tqdm = optional_import("tqdm.auto").tqdm
            return tqdm(total=total, initial=initial, desc=desc, unit="chunk", leave=False)
        except MissingDependency:
            pass  # a progress bar is not worth failing for

    class _Silent:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return _Silent()


def run_chunks(
    func: str | Callable,
    tasks: Mapping[str, Any],
    *,
    shared: Any = None,
    store: ChunkStore,
    config: ExecutorConfig = ExecutorConfig(),
    progress: bool = True,
    desc: str = "chunks",
) -> dict[str, dict[str, np.ndarray]]:
    """Compute ``func(shared, task)`` for every task not yet in ``store``; return all results.

    Each result is written to ``store`` by this process as soon as it arrives (completion
    order), so an interrupted run loses at most the chunks in flight; calling again with the
    same store computes only what is missing. A stored chunk whose inputs digest (of ``shared``
    and its task) differs from this call's is refused rather than reused.

    Args:
        func: ``"package.module:function"`` (or such a module-level function), called in a
            worker as ``func(shared, task)``; returns a dict of float, integer or boolean
            arrays (JAX arrays are converted in the worker).
        tasks: chunk id -> task payload, small and picklable (JSON-like or numpy arrays).
            Ids (1-128 of ``A-Za-z0-9_.-``) name the chunk files.
        shared: a payload every task needs (JSON-like or numpy arrays), sent once to each
            worker rather than with every task; tasks must not modify it.
        store: where finished chunks are kept.
        config: the executor; nothing is started when every chunk is stored already.
        progress: show a tqdm progress bar (when tqdm is installed).
        desc: label of the progress bar (and prefix of Dask task keys).

    Returns:
        chunk id -> arrays (floats as float64), for every id of ``tasks``, in their order.

    Raises:
        TaskFailure: a task raised (the message names the chunk and gives the worker's error;
            the worker traceback is attached as a note), or a worker died. Chunks in flight
            at that moment are finished and stored, no new ones are started.
        SchedulerUnreachable: no Dask scheduler at ``config.scheduler``.
        MissingDependency: ``kind="dask"`` without dask.distributed installed.
        InvalidInput: bad ids, payloads, ``func``, or stored chunks of other inputs.
    """
    if not isinstance(store, ChunkStore):
        raise InvalidInput(f"store must be a ChunkStore; got {type(store).__name__}")
    if not isinstance(config, ExecutorConfig):
        raise InvalidInput(f"config must be an ExecutorConfig; got {type(config).__name__}")
    if not isinstance(tasks, Mapping):
        raise InvalidInput(f"tasks must be a dict of chunk id -> task; got "
                           f"{type(tasks).__name__}")
    func = _func_name(func)
    ids = [_check_id(i) for i in tasks]
    folded: dict[str, str] = {}
    for i in ids:  # case-insensitive file systems (macOS, Windows) would merge these files
        if folded.setdefault(i.lower(), i) != i:
            raise InvalidInput(f"chunk ids {folded[i.lower()]!r} and {i!r} differ only in case")
    digest = fingerprint(shared)
    inputs = {i: fingerprint([digest, tasks[i]]) for i in ids}

    results: dict[str, dict[str, np.ndarray]] = {}
    stored = store.done()
    for i in ids:
        if i not in stored:
            continue
        try:
            arrays, was = store._read(i)
        except MissingChunk:
            continue
        if was != inputs[i]:
            raise InvalidInput(
                f"chunk {i!r} in {str(store.directory)!r} was computed from other inputs (its "
                "task or the shared payload differ from this run's) although the store's "
                "fingerprint matches: make the fingerprint cover everything the results depend "
                f"on, and delete {str(store.directory)!r} (or choose another --out) to "
                "recompute")
        results[i] = arrays
    todo = deque(i for i in ids if i not in results)
    if not todo:
        return results

    bar = _progress(progress, len(ids), len(results), desc)
    if config.kind == "serial":
        backend = _SerialBackend(func, shared, digest)
    elif config.kind == "local":
        backend = _LocalBackend(func, shared, digest, min(config.workers, len(todo)))
    else:
        backend = _DaskBackend(func, shared, digest, config, desc)
    failures: list[TaskFailure] = []
    inflight: dict = {}
    aborted = True
    try:
        while todo or inflight:
            while todo and not failures and len(inflight) < backend.window():
                i = todo.popleft()
                inflight[backend.submit(i, tasks[i])] = i
            if not inflight:
                break
            for fut in backend.wait(list(inflight)):
                i = inflight.pop(fut)
                outcome = backend.outcome(fut, i)
                if isinstance(outcome, TaskFailure):
                    failures.append(outcome)
                    continue
                store.put(i, outcome, inputs=inputs[i])
                results[i] = outcome
                bar.update(1)
        aborted = False
    finally:
        try:
            backend.close(abort=aborted)
        finally:
            bar.close()
    if failures:
        err = failures[0]
        others = [f.chunk_id for f in failures[1:]]
        if others:
            err.add_note(f"{len(others)} other chunk(s) failed too: {others[:10]}"
                         f"{' ...' if len(others) > 10 else ''}")
        err.add_note(f"{len(results)} of {len(ids)} chunks are stored in "
                     f"{str(store.directory)!r}; rerunning resumes from them")
        raise err
    return {i: results[i] for i in ids}

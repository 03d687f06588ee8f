"""One artifact format for every kind of surrogate: a directory with metadata.json + files.

``metadata.json`` has a versioned schema. It lists every ONNX graph by role (``graphs``) and
every array file (``arrays``, ``.npz`` of numeric arrays, no pickles) with its SHA-256, and
carries the SHA-256 of its own canonical content (``content_sha256``, computed without that
field). Loading verifies all of them before anything is evaluated, and treats the directory as
untrusted input (see ``docs/security.md``): bounded sizes and JSON depth, no duplicate JSON
keys, no NaN/inf, only regular files inside the directory (no symlinks, no FIFOs), ONNX graphs
structurally checked (no external data, no custom domains, no functions), ``.npz`` members
parsed without pickles and bounded in size.

Saving is atomic and crash-safe: files are written and fsynced in a temporary sibling
directory ``.NAME.tmp-PID-XXXX`` that then replaces ``NAME`` in one step (Linux
``renameat2(RENAME_EXCHANGE)``; elsewhere two renames with a recovery described in
:func:`recover_artifact`). Temporary directories of killed writers are removed on the next
write. Saving is deterministic: the same inputs give byte-identical files.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from surrogate_stats.artifact._onnx_check import check_onnx_bytes
from surrogate_stats.errors import InvalidArtifact, InvalidInput

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "canonical_json",
    "content_sha256",
    "read_artifact",
    "recover_artifact",
    "write_artifact",
    "load_arrays",
]

SCHEMA = "surrogate_stats.artifact"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
METADATA = "metadata.json"
MAX_METADATA_BYTES = 8 * 2**20
MAX_FILE_BYTES = 512 * 2**20
MAX_JSON_DEPTH = 32
MAX_NPZ_MEMBERS = 4096
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REQUIRED = ("schema", "schema_version", "kind", "graphs", "content_sha256")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: byte-identical .npz files


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, no NaN: the bytes the content hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True).encode()


def content_sha256(metadata: dict) -> str:
    """SHA-256 of the canonical JSON of ``metadata`` without its ``content_sha256`` field."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in metadata.items() if k != "content_sha256"})
    ).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary sibling and a rename."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{_host()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


# -- writing ------------------------------------------------------------------------------------
def _npz_bytes(named: dict[str, np.ndarray], role: str) -> bytes:
    """A .npz (uncompressed zip of .npy) with sorted members and fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(named):
            if not isinstance(key, str) or not key or "\x00" in key:
                raise InvalidInput(f"array names must be non-empty strings; got {key!r} in "
                                   f"role {role!r}")
            arr = np.ascontiguousarray(np.asarray(named[key], dtype=np.float64))
            member = io.BytesIO()
            np.lib.format.write_array(member, arr, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _renameat2():
    """libc's ``renameat2`` (Linux, glibc >= 2.28), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except (OverflowError, OSError):
        return False
    return True


_STALE = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>[0-9]{1,10})-"
                    r"(?P<host>[0-9a-f]{8})-[A-Za-z0-9_]+$")
FOREIGN_STALE_SECONDS = 7 * 86400  # a directory of a writer on another host: kept a week


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _tag() -> str:
    """``PID-HOST``: who writes a temporary directory (checked before it is cleaned)."""
    return f"{os.getpid()}-{_host()}"


def _stale_siblings(directory: Path) -> list[tuple[str, Path]]:
    """``(what, path)`` of temporary/old directories of ``directory`` whose writer is dead."""
    out = []
    try:
        entries = list(os.scandir(directory.parent))
    except OSError:
        return out
    for entry in entries:
        m = _STALE.match(entry.name)
        if not m or m["name"] != directory.name:
            continue
        pid = int(m["pid"])
        if m["host"] != _host():  # another machine's writer: its PID means nothing here
            try:
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age < FOREIGN_STALE_SECONDS:
                continue
        elif pid == os.getpid() or _pid_alive(pid):
            continue  # a writer (perhaps another thread of ours) is still working on it
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        out.append((m["what"], Path(entry.path)))
    return out


def recover_artifact(directory: str | Path) -> Path | None:
    """Finish or undo writes of ``directory`` that were interrupted (killed), and clean up.

    Where ``renameat2(RENAME_EXCHANGE)`` is unavailable, :func:`write_artifact` replaces an
    artifact with two renames: ``NAME -> .NAME.old-PID-X``, then the complete new artifact
    ``.NAME.tmp-PID-Y -> NAME``. A writer killed between the two leaves no ``NAME``; this
    function renames the complete previous artifact back. Leftover temporary directories of
    writers that are no longer running are removed (their names carry the writer's PID and a
    hash of its host name; a directory of another host's writer is removed only when it is
    older than ``FOREIGN_STALE_SECONDS``).
    :func:`write_artifact` calls it before every write.

    Returns:
        The path restored, or None when nothing needed restoring.
    """
    directory = Path(directory)
    restored = None
    stale = _stale_siblings(directory)
    olds = sorted((p for what, p in stale if what == "old"), key=lambda p: p.stat().st_mtime)
    if olds and not os.path.lexists(directory):
        newest = olds.pop()
        os.rename(newest, directory)  # the previous artifact, complete (renamed whole)
        _fsync_dir(directory.parent)
        restored = directory
    for what, path in stale:
        if what == "tmp" or path in olds:
            shutil.rmtree(path, ignore_errors=True)
    return restored


def _replace(tmp: Path, directory: Path) -> None:
    """Move the complete ``tmp`` to ``directory``; the old artifact stays whole until then."""
    if not os.path.lexists(directory):
        try:
            os.rename(tmp, directory)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        else:
            _fsync_dir(directory.parent)
            return
    if _exchange(tmp, directory):  # one atomic step; tmp now holds the previous artifact
        _fsync_dir(directory.parent)
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink()
        return
    old = directory.parent / f".{directory.name}.old-{_tag()}-{secrets.token_hex(4)}"
    os.rename(directory, old)
    try:
        os.rename(tmp, directory)
    except BaseException:
        os.rename(old, directory)  # put the previous artifact back
        raise
    _fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_artifact(directory: str | Path, metadata: dict, graphs: dict[str, bytes],
                   arrays: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Write an artifact atomically and deterministically; returns its path.

    Args:
        directory: target directory; replaced if it exists. At every moment (even if the
            process is killed) ``directory`` is either the complete old or the complete new
            artifact (see :func:`recover_artifact` for platforms without an atomic exchange).
        metadata: kind-specific content; ``schema``, ``graphs``, ``arrays`` and the hashes
            are filled in here.
        graphs: role -> serialised ONNX bytes; the ``"model"`` role is written as
            ``model.onnx``, others as ``<role>.onnx``.
        arrays: role -> named float arrays, written as ``<role>.npz`` (float64, sorted
            members, fixed timestamps: the same arrays give the same bytes).
    """
    directory = Path(directory)
    meta = dict(metadata)
    meta["schema"] = SCHEMA
    meta["schema_version"] = SCHEMA_VERSION
    files: dict[str, bytes] = {}
    graph_meta = {}
    for role, blob in graphs.items():
        name = "model.onnx" if role == "model" else f"{role}.onnx"
        if not _FILENAME.match(name):
            raise InvalidInput(f"graph role {role!r} does not give a plain file name")
        files[name] = bytes(blob)
        graph_meta[role] = {**meta.get("graphs", {}).get(role, {}), "file": name,
                            "sha256": _sha256(blob)}
    meta["graphs"] = graph_meta
    array_meta = {}
    for role, named in (arrays or {}).items():
        name = f"{role}.npz"
        if not _FILENAME.match(name):
            raise InvalidInput(f"array role {role!r} does not give a plain file name")
        blob = _npz_bytes(named, role)
        files[name] = blob
        array_meta[role] = {"file": name, "sha256": _sha256(blob), "names": sorted(named)}
    meta["arrays"] = array_meta
    meta.pop("content_sha256", None)
    meta["content_sha256"] = content_sha256(meta)
    files[METADATA] = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False).encode() + b"\n"

    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_artifact(directory)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{_tag()}-",
                                dir=directory.parent))
    try:
        for name, blob in files.items():
            with open(tmp / name, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        _replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# -- reading ------------------------------------------------------------------------------------
def _depth(obj: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(obj, dict):
        return max([_depth(v, limit, level + 1) for v in obj.values()] or [level])
    if isinstance(obj, list):
        return max([_depth(v, limit, level + 1) for v in obj] or [level])
    return level


def _read_regular(path: Path, limit: int, what: str) -> bytes:
    """Read a regular file without following symlinks, refusing more than ``limit`` bytes."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InvalidArtifact(f"{what}: {str(path)!r} is missing") from None
    except OSError as exc:  # ELOOP: a symlink; EACCES; ...
        kind = "is a symlink" if path.is_symlink() else f"cannot be opened ({exc.strerror})"
        raise InvalidArtifact(f"{what}: {str(path)!r} {kind}; artifact files must be regular "
                              "files inside the artifact directory") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArtifact(f"{what}: {str(path)!r} is missing (or is not a regular file)")
        if st.st_size > limit:
            raise InvalidArtifact(f"{what}: {str(path)!r} is larger than {limit} bytes")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise InvalidArtifact(f"{what}: {str(path)!r} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_file(directory: Path, name: Any, what: str) -> bytes:
    if not isinstance(name, str) or not _FILENAME.match(name):
        raise InvalidArtifact(f"{what}.file: file name {name!r} in {METADATA} is not a plain "
                              "file name inside the artifact directory")
    return _read_regular(directory / name, MAX_FILE_BYTES, f"{what}.file")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]!r} overflows to {value}")
    return value


def _no_duplicates(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen, dup = set(), None
        for k, _ in pairs:
            if k in seen:
                dup = k
                break
            seen.add(k)
        raise ValueError(f"duplicate key {dup!r}")
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _missing_hint(directory: Path) -> str:
    olds = [p.name for p in directory.parent.glob(f".{directory.name}.old-*")] \
        if directory.parent.is_dir() else []
    if olds:
        return (f"; an interrupted write left the previous artifact in {olds[0]!r}: "
                "surrogate_stats.artifact.recover_artifact(path) restores it")
    return ""


def parse_metadata(raw: bytes, where: str = METADATA) -> dict:
    """Parse metadata.json bytes strictly; :class:`InvalidArtifact` for anything malformed.

    Refused: invalid UTF-8 or JSON, NaN/Infinity, numbers overflowing a float, duplicate keys,
    nesting deeper than ``MAX_JSON_DEPTH``, a top level that is not an object.
    """
    try:
        meta = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError, TypeError) as exc:
        raise InvalidArtifact(f"{where!r} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(meta, dict):
        raise InvalidArtifact(f"{where!r} must hold a JSON object")
    if _depth(meta, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidArtifact(f"{where!r} is nested deeper than {MAX_JSON_DEPTH}")
    return meta


def read_artifact(directory: str | Path) -> tuple[dict, dict[str, bytes], dict[str, dict]]:
    """Read and verify an artifact: schema, content hash, every file's hash and structure.

    Returns:
        ``(metadata, graphs, arrays)``: graphs as role -> ONNX bytes (structurally checked:
        no external data, only standard ONNX domains, no functions), arrays as role ->
        {name: float64 array}.

    Raises:
        InvalidArtifact: anything is missing, malformed, of an unknown schema version, does
            not match its recorded SHA-256 or fails a structural check; the message names the
            file and the field.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidArtifact(f"{str(directory)!r} is not an artifact directory (expected a "
                              f"directory with {METADATA} and model.onnx)"
                              f"{_missing_hint(directory)}")
    meta_path = directory / METADATA
    raw = _read_regular(meta_path, MAX_METADATA_BYTES, METADATA)
    where = str(meta_path)
    meta = parse_metadata(raw, where)
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InvalidArtifact(f"{where!r} lacks the field(s) {missing}")
    if meta["schema"] != SCHEMA:
        raise InvalidArtifact(f"{where!r}: schema is {str(meta['schema'])[:80]!r}, expected "
                              f"{SCHEMA!r}")
    version = meta["schema_version"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise InvalidArtifact(
            f"{where!r}: unknown schema_version {str(version)[:40]}; this version of "
            f"surrogate_stats reads {list(SUPPORTED_VERSIONS)} (upgrade it to read newer "
            "artifacts)")
    if not isinstance(meta["kind"], str) or not meta["kind"]:
        raise InvalidArtifact(f"{where!r}: field 'kind' must be a non-empty string")
    for key, typ, what in (("name", str, "a string"), ("provenance", dict, "an object"),
                           ("arrays", dict, "an object")):
        if key in meta and not isinstance(meta[key], typ):
            raise InvalidArtifact(f"{where!r}: field {key!r} must be {what}")
    if content_sha256(meta) != meta["content_sha256"]:
        raise InvalidArtifact(f"{where!r} was modified after it was written: its "
                              "content does not match content_sha256")
    if not isinstance(meta["graphs"], dict) or "model" not in meta["graphs"]:
        raise InvalidArtifact(f"{where!r}: 'graphs' must list the 'model' graph")
    graphs, arrays = {}, {}
    for section, out in (("graphs", graphs), ("arrays", arrays)):
        entries = meta.get(section, {})
        if not isinstance(entries, dict):
            raise InvalidArtifact(f"{where!r}: '{section}' must be an object")
        for role, entry in entries.items():
            field = f"{section}.{role}"
            if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
                raise InvalidArtifact(f"{where!r}: {field} needs 'file' and 'sha256'")
            if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
                raise InvalidArtifact(f"{where!r}: {field}.sha256 must be 64 lower-case hex "
                                      "digits")
            blob = _read_file(directory, entry["file"], field)
            path = directory / entry["file"]
            if _sha256(blob) != entry["sha256"]:
                raise InvalidArtifact(f"{str(path)!r} does not match its SHA-256 in "
                                      f"{METADATA} ({field}.sha256): the file is corrupt or "
                                      "was modified")
            if section == "graphs":
                check_onnx_bytes(blob, file=str(path))
                out[role] = blob
            else:
                out[role] = _load_npz(blob, path)
                names = entry.get("names")
                if names is not None and names != sorted(out[role]):
                    raise InvalidArtifact(f"{str(path)!r} holds the arrays "
                                          f"{sorted(out[role])[:20]}, but {field}.names in "
                                          f"{METADATA} lists {str(names)[:200]}")
    return meta, graphs, arrays


def _load_npz(blob: bytes, path: Path) -> dict[str, np.ndarray]:
    """Numeric arrays of a .npz, parsed without pickles and with bounded memory."""
    where = str(path)
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidArtifact(f"{where!r} is not a readable .npz (zip) file: {exc}") from None
    if len(infos) > MAX_NPZ_MEMBERS:
        raise InvalidArtifact(f"{where!r} has {len(infos)} members (at most "
                              f"{MAX_NPZ_MEMBERS})")
    if sum(i.file_size for i in infos) > MAX_FILE_BYTES:
        raise InvalidArtifact(f"{where!r} unpacks to more than {MAX_FILE_BYTES} bytes")
    out: dict[str, np.ndarray] = {}
    for info in infos:
        name = info.filename
        if not name.endswith(".npy") or len(name) > 260 or "\x00" in name:
            raise InvalidArtifact(f"{where!r}: member {name[:80]!r} is not a .npy array")
        key = name[:-4]
        if key in out:
            raise InvalidArtifact(f"{where!r}: array {key!r} appears twice")
        try:
            out[key] = _parse_npy(_read_member(zf, info))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, RuntimeError,
                NotImplementedError, zlib.error) as exc:
            raise InvalidArtifact(f"{where!r}: array {key!r} is unreadable: "
                                  f"{str(exc)[:200]}") from None
        if not np.all(np.isfinite(out[key])):
            raise InvalidArtifact(f"{where!r}: array {key!r} holds NaN or inf")
    return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, decompressed in chunks and never beyond its declared size (a zip
    bomb whose header understates the size is stopped after that many bytes)."""
    chunks, size = [], 0
    with zf.open(info) as f:
        while True:
            chunk = f.read(min(1 << 20, info.file_size + 1 - size))
            if not chunk:
                break
            size += len(chunk)
            if size > info.file_size:
                raise ValueError("the member unpacks to more than the size its header "
                                 "declares")
            chunks.append(chunk)
    return b"".join(chunks)


def _parse_npy(data: bytes) -> np.ndarray:
    """A float64 copy of one .npy; refuses object, string, complex and structured dtypes."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiub":
        raise ValueError(f"arrays must be numeric; found dtype {dtype}")
    count = math.prod(shape)
    body = memoryview(data)[fp.tell():]
    if count * dtype.itemsize != len(body):
        raise ValueError(f"header says {shape} of {dtype} ({count * dtype.itemsize} bytes), "
                         f"the member holds {len(body)} bytes")
    arr = np.frombuffer(body, dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return np.array(arr, dtype=np.float64)  # a private, writable, native-order copy


def load_arrays(arrays: dict, role: str, names: list[str]) -> dict[str, np.ndarray]:
    """Check that array role ``role`` has every name in ``names``."""
    if role not in arrays:
        raise InvalidArtifact(f"the artifact has no {role!r} arrays")
    absent = [n for n in names if n not in arrays[role]]
    if absent:
        raise InvalidArtifact(f"{role}.npz lacks the arrays {absent}")
    return arrays[role]


def finite_number(meta: dict, *path: str) -> float:
    """``meta[path...]`` as a finite float, or :class:`InvalidArtifact` naming the field."""
    obj: Any = meta
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise InvalidArtifact(f"metadata.json lacks the field {'.'.join(path)}")
        obj = obj[key]
    try:
        ok = not isinstance(obj, bool) and isinstance(obj, (int, float)) and math.isfinite(obj)
    except OverflowError:  # an integer too large for a float
        ok = False
    if not ok:
        raise InvalidArtifact(f"metadata.json field {'.'.join(path)} must be a finite number; "
                              f"got {str(obj)[:80]!r}")
    return float(obj)

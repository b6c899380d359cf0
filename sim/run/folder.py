"""Output folders with integrity: one writer at a time, a manifest written last.

Every folder capsim writes (``capsim run --out``, ``capsim sweep --out``,
``capsim capacity --out``) is

* **locked** while a command writes it: ``.capsim.lock`` holds an exclusive
  POSIX record lock (``lockf``, which forked workers do not inherit); a
  second writer fails at once with one line naming the holder;
* **checked before any simulation**: the folder is created (so a path under a
  file, in ``/proc`` or without write permission is refused up front) and its
  kind compared with the command's: a run folder is never turned into a sweep
  folder, a sweep folder never half-overwritten by a run, and a non-empty
  folder capsim did not write is refused;
* **sealed by a manifest** ``capsim.json`` written last: which command, which
  kind, which points, and the sha256 of every file.  It is removed before the
  folder's files are rewritten, so a folder whose final write was interrupted
  has no manifest and reads as partial.  :func:`verify` (used by
  ``capsim report``) names a partial, mixed or foreign folder and a file that
  changed since it was written.

Sweep points (``points/<id>/``) carry their own ``hashes.json``, written after
the point's files; resume recomputes a point whose files do not match it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sim.errors import CapsimError, IOFailure
from sim.files import atomic_write_text
from sim.version import __version__

MANIFEST = "capsim.json"
LOCK = ".capsim.lock"
# Files capsim writes at the top of an output folder, by kind.
RUN_FILES = ("scenario.resolved.yaml", "summary.json", "records.parquet")
SWEEP_FILES = ("summary.json", "summary.csv", "summary.parquet", "records.parquet", "timeseries.parquet")
KNOWN_FILES = frozenset(RUN_FILES + SWEEP_FILES)
#: What capsim keeps at the top of a sealed folder besides the files its manifest lists:
#: the manifest, a sweep's point folders, and what ``capsim report`` draws.
OWN_ENTRIES = frozenset({MANIFEST, "points", "report", "report.html"})

try:  # fcntl is POSIX-only
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, folders are not guarded
    fcntl = None  # type: ignore[assignment]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def command_line() -> str:
    argv = sys.argv[1:] if sys.argv and sys.argv[0] else []
    return "capsim " + shlex.join(argv)


# --------------------------------------------------------------------------- locks

_held: dict[str, list[Any]] = {}  # resolved folder -> [fd, depth]; re-entrant within a process


@contextmanager
def locked(folder: str | Path, flag: str = "--out") -> Iterator[Path]:
    """Hold ``folder/.capsim.lock`` exclusively (re-entrant in this process).

    A second process fails at once with a one-line :class:`CapsimError`.
    """
    out = Path(folder)
    key = str(out.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield out
        finally:
            _held[key][1] -= 1
        return
    lock = out / LOCK
    while True:
        fd = _lock_fd(lock, out, flag)
        try:
            if _same_file(fd, lock):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command_line()}\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield out
        finally:
            del _held[key]
            # Removed while still held, so no lock file outlives the command (a later writer
            # that opened the old file sees it gone and locks a new one: see _same_file).
            with suppress(OSError):
                os.unlink(lock)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock_fd(lock: Path, out: Path, flag: str) -> int:
    """The lock file, opened and locked (a one-line error if another capsim holds it)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CapsimError(f"{flag} {out}: cannot write in this folder ({e.strerror or e})") from None
    if fcntl is None:
        return fd
    # A POSIX record lock, not flock: a --jobs pool forks while the folder is
    # locked, and a flock would live on in every forked worker's copy of the
    # descriptor (a worker winding down after a sibling died kept the folder
    # locked against the re-run).  Record locks belong to this process only.
    # Nothing else in capsim opens the lock file, so no other close drops it.
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        try:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise CapsimError(f"{flag} {out}: cannot lock this folder ({e.strerror or e})") from None
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise CapsimError(
                f"{flag} {out}: another capsim ({holder}) is writing this folder; "
                "wait for it to finish or give another folder"
            ) from None
        finally:
            os.close(fd)
    return fd


def _same_file(fd: int, path: Path) -> bool:
    """Is the locked descriptor still the file at ``path`` (not one its holder removed)?"""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)


# --------------------------------------------------------------------------- kinds


def read_manifest(folder: Path) -> dict | None:
    f = folder / MANIFEST
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError):
        return {"kind": "corrupt"}
    return doc if isinstance(doc, dict) and isinstance(doc.get("files"), dict) else {"kind": "corrupt"}


def folder_kind(folder: Path) -> str:
    """``"new"`` (missing or empty), ``"run"``, ``"sweep"`` or ``"foreign"``.

    A folder without a manifest is judged by what it holds: ``points/`` is a
    sweep (perhaps stopped before its end, which a re-run resumes),
    ``scenario.resolved.yaml`` a run.
    """
    if not folder.exists():
        return "new"
    m = read_manifest(folder)
    if m is not None and m.get("kind") in ("run", "sweep"):
        return str(m["kind"])
    if (folder / "points").is_dir():
        return "sweep"
    if (folder / "scenario.resolved.yaml").is_file():
        return "run"
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return "new" if not visible else "foreign"


def prepare_out(out: Path | None, kind: str, flag: str = "--out") -> Path | None:
    """Every path problem with ``out`` as a one-line error, before any simulation:
    a file, a folder that cannot be created or written, a folder of another kind."""
    if out is None:
        return None
    try:
        return _prepare_out(out, kind, flag)
    except OSError as e:  # a name too long, a folder that cannot be listed
        raise IOFailure.of(e, f"{flag}: cannot use") from None


def _prepare_out(out: Path, kind: str, flag: str) -> Path:
    if out.exists() and not out.is_dir():
        raise CapsimError(f"{flag} {out}: is a file; give a folder (it is created if missing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CapsimError(f"{flag} {out}: {parent} is a file, not a folder")
            break
    have = folder_kind(out)
    if have not in ("new", kind):
        what = {
            "run": "a capsim run --out folder",
            "sweep": "a capsim sweep/capacity --out folder",
            "foreign": "a folder of files capsim did not write",
        }[have]
        raise CapsimError(
            f"{flag} {out}: is {what}; a {kind} would mix its files with those, so give a new or empty folder"
        )
    try:
        make_folders(out)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG):
            raise IOFailure.of(e, f"{flag}: cannot create the folder") from None
        raise CapsimError(f"{flag} {out}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CapsimError(f"{flag} {out}: the folder is not writable")
    return out


def make_folders(path: Path) -> None:
    """``mkdir -p`` without recursion (``Path.mkdir(parents=True)`` recurses once per missing
    level and a path 1,200 folders deep ends in a RecursionError)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise


# --------------------------------------------------------------------------- manifest


def unseal(folder: Path) -> None:
    """Remove the manifest before rewriting the folder's files (a crash then reads as partial)."""
    with suppress(FileNotFoundError):
        (folder / MANIFEST).unlink()


def seal(folder: Path, kind: str, files: list[Path], points: list[str] | None = None) -> Path:
    """Write ``capsim.json`` last: the command, the kind, the points and each file's sha256."""
    doc = {
        "capsim": __version__,
        "kind": kind,
        "command": command_line(),
        "points": points or [],
        "files": {str(Path(f).relative_to(folder)): sha256_file(Path(f)) for f in files},
    }
    path = folder / MANIFEST
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def verify(folder: Path) -> dict:
    """The manifest of a finished capsim folder, or a one-line error naming what is wrong:
    missing folder, foreign folder, partial (no manifest), mixed (files it does not list),
    or a file whose contents changed."""
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise CapsimError(f"{folder}: {what} (expected a folder written by capsim sweep --out or capsim run --out)")
    m = read_manifest(folder)
    if m is None:
        kind = folder_kind(folder)
        if kind in ("new", "foreign"):
            raise CapsimError(
                f"{folder}: not a capsim output folder (no {MANIFEST}); give one written by "
                "capsim sweep --out or capsim run --out"
            )
        raise CapsimError(
            f"{folder}: partial {kind} folder: no {MANIFEST} manifest, so its files were never finished "
            "(a run stopped during its final write, or an older capsim wrote it); run the same command again"
        )
    if m.get("kind") == "corrupt":
        raise CapsimError(f"{folder / MANIFEST}: unreadable manifest; run the command that wrote the folder again")
    files: dict = m["files"]
    # Anything else at the top that the manifest does not list (hidden files aside: the lock,
    # a sweep's streaming .partial files) was written by someone else: the folder is mixed.
    extra = sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.name not in files and p.name not in OWN_ENTRIES
    )
    if extra:
        raise CapsimError(
            f"{folder}: mixed folder: {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} not written by the "
            f"{m.get('kind')} that sealed it "
            f"({m.get('command')}); write each command to its own folder"
        )
    for name, digest in files.items():
        f = folder / name
        if not f.is_file():
            raise CapsimError(f"{folder}: partial folder: {name} is listed in {MANIFEST} but missing")
        if sha256_file(f) != digest:
            raise CapsimError(
                f"{f}: changed since capsim wrote it (sha256 differs from {MANIFEST}); run the command again"
            )
    return m

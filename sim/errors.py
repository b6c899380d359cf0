"""User-facing errors.

A :class:`CapsimError` is a mistake in what the user gave us (a scenario key,
a CLI flag, a calibration file).  Its message is one line that names the
dotted key and what is allowed; the CLI prints it as ``error: <message>``
and exits with status 2, without a traceback and without writing files.
"""

from __future__ import annotations

import errno


class CapsimError(Exception):
    """Bad input: one line, naming the key and what is allowed."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class RunStopped(Exception):
    """A run stopped before its end (a worker died, Ctrl-C); what finished is saved.
    ``exit_code`` is :data:`EXIT_WORKER_DIED` or :data:`EXIT_INTERRUPTED`."""

    def __init__(self, message: str, exit_code: int = 5):
        super().__init__(message)
        self.exit_code = exit_code


class IOFailure(CapsimError):
    """An ordinary input/output failure (disk full, file-size limit, read-only folder, a file
    where a folder should be, a name too long): one line naming the path and the system's
    reason; exit :data:`EXIT_IO`.  What finished is saved and the same command resumes."""

    exit_code = 6  # EXIT_IO

    @classmethod
    def of(cls, e: OSError, doing: str = "") -> IOFailure:
        """``e`` as one line: what was being done, the path, the system's words and errno name."""
        name = errno.errorcode.get(e.errno or 0, "")
        where = f" {e.filename!s}" if e.filename is not None else ""
        if len(where) > 160:
            where = where[:80] + "..." + where[-60:]
        reason = e.strerror or str(e) or type(e).__name__
        head = f"{doing}{where}" if doing else (f"cannot write{where}" if where else "input/output failure")
        hint = _IO_HINTS.get(name, "")
        return cls(f"{head}: {reason}{f' ({name})' if name else ''}{hint}")


_IO_HINTS = {
    "ENOSPC": "; free some space and run the same command again (finished points are kept)",
    "EDQUOT": "; free some space and run the same command again (finished points are kept)",
    "EFBIG": "; raise the file-size limit (ulimit -f) and run the same command again",
    "EROFS": "; give an --out folder on a writable file system",
    "EACCES": "; give a folder you may write",
    "ENAMETOOLONG": "; give a shorter path",
}


class ConfigError(CapsimError):
    """A scenario or override that does not validate."""


class CalibrationError(CapsimError):
    """A calibration file or measurement that cannot be used."""


# Exit codes of every ``capsim`` command (README "Exit codes", ``capsim --help``).
EXIT_PASS = 0  # every SLA passes (or none is set); a command without verdicts succeeded
EXIT_FAIL = 1  # an SLA fails (only ever a verdict, never a crash)
EXIT_BAD_INPUT = 2  # bad input: one line on stderr naming the key, nothing written
EXIT_INCONCLUSIVE = 3  # a verdict is inconclusive and none fails
EXIT_INTERNAL = 4  # a bug in capsim: one line on stderr plus the file holding the traceback
EXIT_WORKER_DIED = 5  # a worker process died mid-sweep; finished points are saved, re-run resumes
EXIT_IO = 6  # an I/O failure (disk full, file-size limit, read-only folder): one line; re-run resumes
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); finished points are saved, re-run resumes

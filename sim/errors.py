"""User-facing errors.

A :class:`CapsimError` is a mistake in what the user gave us (a scenario key,
a CLI flag, a calibration file).  Its message is one line that names the
dotted key and what is allowed; the CLI prints it as ``error: <message>``
and exits with status 2, without a traceback and without writing files.
"""

from __future__ import annotations


class CapsimError(Exception):
    """Bad input: one line, naming the key and what is allowed."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(CapsimError):
    """A scenario or override that does not validate."""


class CalibrationError(CapsimError):
    """A calibration file or measurement that cannot be used."""

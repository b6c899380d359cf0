"""Files written whole or not at all, and JSON that survives NaN.

Every file capsim writes goes to a temporary name in the target folder and is
renamed into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def to_json(doc: Any) -> str:
    """``doc`` as indented JSON; NaN and infinities become ``null``, numpy scalars plain numbers."""
    return json.dumps(clean(doc), indent=2)


def clean(x: Any) -> Any:
    """``x`` with every non-finite float as None and numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return clean(x.item())
    if hasattr(x, "to_dict") and callable(x.to_dict):  # typed summaries
        return clean(x.to_dict())
    return x


def regular_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as an input file (missing, a folder, a FIFO, a device,
    a socket), or None for a regular file.  Checked before opening: a FIFO would block."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except ValueError:  # a NUL byte: no file can have that name
        return "is not a file name (it holds a NUL byte)"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "is a folder; give a file"
    if stat.S_ISFIFO(st.st_mode):
        return "is a FIFO (named pipe); give a regular file"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "is a device; give a regular file"
    return "is not a regular file"


MAX_INPUT_BYTES = 16 * 1024 * 1024  # a scenario, target or calibration file is kilobytes


def read_input_text(path: str | Path, what: str, error: type[Exception], max_bytes: int = MAX_INPUT_BYTES) -> str:
    """The UTF-8 text of an input file, or ``error`` with one line starting ``what 'path'``
    and saying why not: missing, a folder, a FIFO (checked before opening: it would block),
    a device, too big, unreadable or binary."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise error(f"{what} {str(path)!r} {problem}")
    p = Path(path)
    size = p.stat().st_size
    if size > max_bytes:
        raise error(f"{what} {str(path)!r} is {size:,} bytes; at most {max_bytes:,} are read")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{what} {str(path)!r}: cannot be read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{what} {str(path)!r}: not UTF-8 text (byte {e.start}); is it a binary file?") from None


def data_path(name: str) -> Path:
    """A data file shipped with capsim (``sim/data/<name>``)."""
    return Path(__file__).resolve().parent / "data" / name


def read_yaml_data(path: str | Path) -> Any:
    """A YAML data file shipped with capsim (a catalog), read as ``yaml.safe_load`` reads it:
    parsed by libyaml where PyYAML has it (``CSafeLoader``: the same values, a tenth of the
    time), else by PyYAML's own parser."""
    import yaml  # deferred: the commands that read no catalog skip it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)  # a safe loader

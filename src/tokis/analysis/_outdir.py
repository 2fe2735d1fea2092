"""The output directory of a command, checked before any computation (stdlib only)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_out_dir"]


def check_out_dir(path, option: str = "--out") -> Path:
    """Create ``path`` as a directory if needed and check that files can be written into it.

    Called before a sweep starts, so a bad ``--out`` fails in a second, not after an hour of
    computation.

    Parameters
    ----------
    path : str or os.PathLike
        The output directory (created with its parents when missing).
    option : str
        The option named in errors.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    ValueError
        When ``path`` is an existing file, lies under a file, cannot be created or is not
        writable; the message names ``option`` and the path.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{option} must be a directory path, got {path!r}")
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(path)!r} is an existing file, not a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {str(path)!r} lies under the file {str(parent)!r}")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{option} {str(path)!r} is not a writable directory ({reason})") from None
    return out

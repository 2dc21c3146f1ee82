"""Atomic file writes: every file keras-tlft writes goes through here (and JSON read back).

The new content is written to a temporary file in the destination's folder, flushed to disk,
then moved over the destination with ``os.replace`` (atomic on POSIX and Windows). A write that
fails half-way (disk full, an exception, a kill) leaves the previous file as it was and no
temporary file behind (a kill -9 can leave a hidden ``.NAME.*.tmp*`` file, never a torn NAME).

Standard library only: ``keras-tlft --help`` imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_path", "atomic_write", "read_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    For writers that want a file name rather than a file object (``model.save_weights``,
    ``fig.savefig``). ``suffix`` ends the temporary name (Keras insists on ``.weights.h5``).
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=f".tmp{suffix}")
    os.close(handle)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed it without syncing
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it; mkstemp's is 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", suffix: str = ""
) -> Iterator:
    """Yield an open file (``mode`` ``"w"`` or ``"wb"``); on success it replaces ``path``.

    Example:

    ```python
    with atomic_write("schedule.json") as f:
        json.dump(doc, f)
    ```
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb'. Received: mode={mode!r}")
    with atomic_path(path, suffix) as tmp, open(
        tmp, mode, encoding=None if "b" in mode else encoding
    ) as f:
        yield f


def read_json(path: str | os.PathLike, what: str = "File"):
    """The JSON document in ``path``; invalid JSON and a key given twice in one object (JSON
    readers keep only the last) are ValueErrors that name the file (``what``: its kind)."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f, object_pairs_hook=_refuse_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} {str(path)!r} is not valid JSON: {exc}. "
                             f"Received: path={str(path)!r}") from None
        except _DuplicateKey as exc:
            raise ValueError(
                f"{what} {str(path)!r} gives the key {exc.key!r} twice in one object: "
                "JSON readers keep only the last, so one of the two would be ignored. "
                f"Expected each key once. Received: path={str(path)!r}"
            ) from None


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs) -> dict:
    data: dict = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data

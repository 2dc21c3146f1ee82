"""Atomic result files for the helper scripts: a temporary file in the same folder, then
``os.replace``, so that a killed process leaves no half-written result behind."""

from __future__ import annotations

import json
import os
import tempfile


def write_atomically(path: str, write, suffix: str) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then move it there."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=suffix + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, data) -> None:
    write_atomically(path, lambda f: f.write(json.dumps(data).encode()), ".json")


def save_npz(path: str, arrays: dict) -> None:
    import numpy as np

    write_atomically(path, lambda f: np.savez(f, **arrays), ".npz")

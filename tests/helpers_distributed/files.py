"""Atomic result files for the helper scripts (keras_tlft.atomic_write: a temporary file in the
same folder, then ``os.replace``), so that a killed process leaves no half-written result behind."""

from __future__ import annotations

import json

from keras_tlft import atomic_write


def write_json(path: str, data) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(data))


def save_npz(path: str, arrays: dict) -> None:
    import numpy as np

    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)

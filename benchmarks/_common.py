"""Shared plumbing of the benchmark scripts: environment, timing, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from keras_tlft import atomic_write

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    """What the figures were measured on."""
    import keras

    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": describe_device(),
    }


def describe_device() -> str:
    from keras_tlft.bench import device_name

    return device_name()[0]


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def write_json(name: str, doc: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    with atomic_write(path) as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}",
          file=sys.stderr)
    return path

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


def plot_curves(curves: dict, changes: dict, path: Path, title: str, ylabel: str) -> None:
    """Learning curves, one line per recipe, its stage changes as dotted lines of its colour;
    the PNG written atomically (temporary file, then ``os.replace``). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for recipe, points in curves.items():
        (line,) = ax.plot(range(1, len(points) + 1), points, marker="o", ms=3, label=recipe)
        for epoch in changes.get(recipe, []):
            ax.axvline(epoch + 0.5, color=line.get_color(), ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)

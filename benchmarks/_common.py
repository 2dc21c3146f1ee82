"""Shared plumbing of the benchmark scripts: environment, timing, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import keras

from keras_tlft import atomic_write

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": describe_device(),
        "load_average": os.getloadavg(),  # 1, 5, 15 minutes, when the figures were written
    }


def describe_device() -> str:
    from keras_tlft.reporting.bench import device_name

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


def keras_adam_update() -> None:
    """From now on the callback leaves Keras's own Adam update alone on TensorFlow (about 40 ops
    a variable) instead of fusing it into one op a variable: the ``--no-fused-adam`` control."""
    from keras_tlft.callbacks import optim

    optim.fused_adam = lambda optimizer, per_step: None


def write_json(name: str, doc: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    with atomic_write(path) as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}",
          file=sys.stderr)
    return path


class Curve(keras.callbacks.Callback):
    """Accuracy on a fixed test slice after every epoch, across fits (one instance for all the
    fits of a run); its own time is kept apart in ``seconds``.

    With ``drift`` (a ``keras_tlft.FeatureDrift``), that callback runs inside this one, its time
    kept apart too, and ``drift_points[key]`` records, for each key of ``drift_keys``, the value
    it logged at each epoch's end.
    """

    def __init__(self, x, y, batch_size=500, drift=None,
                 drift_keys=("drift_cos_min", "drift_cka_min")):
        super().__init__()
        self.x, self.y, self.batch_size, self.drift = x, y, batch_size, drift
        self.points, self.seconds = [], 0.0
        self.drift_points = {key: [] for key in drift_keys} if drift is not None else {}

    def set_model(self, model):
        super().set_model(model)
        if self.drift is not None:
            self.drift.set_model(model)

    def _timed(self, work, *args):
        start = time.perf_counter()
        work(*args)
        self.seconds += time.perf_counter() - start

    def _drift(self, hook, *args):
        if self.drift is not None:
            self._timed(getattr(self.drift, hook), *args)

    def on_train_begin(self, logs=None):
        self._drift("on_train_begin", logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._drift("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        self._drift("on_epoch_end", epoch, logs)
        for key, values in self.drift_points.items():
            values.append(float(logs[key]))
        self._timed(self._evaluate)

    def on_train_end(self, logs=None):
        self._drift("on_train_end", logs)

    def _evaluate(self):
        self.points.append(float(self.model.evaluate(self.x, self.y, batch_size=self.batch_size,
                                                     verbose=0)[1]))


def plot_curves(curves: dict, changes: dict, path: Path, title: str, ylabel: str,
                lower: dict | None = None, lower_ylabel: str = "") -> None:
    """Learning curves, one line per recipe, its stage changes as dotted lines of its colour;
    with ``lower`` (recipe -> one value per epoch), a second panel under them with the same
    colours and epochs (e.g. feature drift). The PNG is written atomically (temporary file, then
    ``os.replace``). Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if lower:
        fig, (ax, below) = plt.subplots(2, 1, figsize=(7.5, 7.6), sharex=True,
                                        height_ratios=(1.3, 1))
    else:
        fig, ax = plt.subplots(figsize=(7.5, 4.4))
    colours = {}
    for recipe, points in curves.items():
        (line,) = ax.plot(range(1, len(points) + 1), points, marker="o", ms=3, label=recipe)
        colours[recipe] = line.get_color()
        for epoch in changes.get(recipe, []):
            ax.axvline(epoch + 0.5, color=line.get_color(), ls=":", lw=1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    if lower:
        for recipe, points in lower.items():
            below.plot(range(1, len(points) + 1), points, marker="o", ms=3,
                       color=colours.get(recipe), label=recipe)
            for epoch in changes.get(recipe, []):
                below.axvline(epoch + 0.5, color=colours.get(recipe), ls=":", lw=1)
        below.set_ylabel(lower_ylabel, fontsize=9)
        below.grid(alpha=0.3)
        ax = below
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)

"""What compiling each stage's step ahead saves on JAX: whole fits, with and without.

``ProgressiveUnfreeze(compile_ahead=True)`` (the default) traces the next stage's train step once
a stage's first step is dispatched and lets XLA compile it in a background thread while the stage
trains; ``compile_ahead=False`` compiles each stage at its first step, as keras-tlft 0.2 did. The
background compile shares the CPU with the steps, so the question is the whole fit's wall time,
not only the stage change's. Each cell fits the same model from the same weights both ways,
interleaved, ``--repeats`` times, in one process:

- ``two_phase_short``: MobileNetV2 96x96 (``weights=None``), ``{0: "none", 2: "all"}``, 6 steps an
  epoch, 4 epochs: the frozen stage (12 steps) is shorter than the compile it hides;
- ``two_phase_long``: the same with 20 steps an epoch;
- ``gradual``: ``{0: "none", 1: 1, 2: 3, 3: 6, 4: "all"}``, 6 steps an epoch, 5 epochs: four
  changes, one epoch each;
- ``gradual_lite0`` (not with ``--quick``): EfficientNet-Lite0 64x64 (``weights=None``),
  ``"gradual:every=1"`` over 6 epochs of 8 steps.

Prints per cell the fit times and their ratio (ahead / not), each stage change (its first step
less the stage's median step) and the median step of each stage (every step but each stage's
first, so that steps slowed by a background compile count). Batch 16, the same batch repeated.

    KERAS_BACKEND=jax python benchmarks/compile_ahead.py [--quick] [--repeats 2]

Writes ``benchmarks/results/compile_ahead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

from keras_tlft import ProgressiveUnfreeze, build_model  # noqa: E402
from keras_tlft.reporting.bench import repeated_batch  # noqa: E402

CELLS = {
    "two_phase_short": ("mobilenet_v2", 96, {0: "none", 2: "all"}, 6, 4),
    "two_phase_long": ("mobilenet_v2", 96, {0: "none", 2: "all"}, 20, 4),
    "gradual": ("mobilenet_v2", 96, {0: "none", 1: 1, 2: 3, 3: 6, 4: "all"}, 6, 5),
    "gradual_lite0": ("efficientnet_lite0", 64, "gradual:every=1", 8, 6),
}
BATCH = 16


class StepTimes(keras.callbacks.Callback):
    """Each epoch's step times (batch end to batch end, the first from the epoch's start)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[list[float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])
        self.last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.epochs[-1].append(now - self.last)
        self.last = now


def fit_once(name, size, schedule, steps, epochs, ahead) -> dict:
    keras.utils.set_random_seed(0)
    model = build_model(name, 10, input_shape=(size, size, 3), weights=None)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (BATCH, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, BATCH)
    unfreeze = ProgressiveUnfreeze(schedule, stage_change="retrace", compile_ahead=ahead)
    clock = StepTimes()
    start = time.perf_counter()
    model.fit(repeated_batch(x, y, steps), epochs=epochs, verbose=0,
              callbacks=[unfreeze, clock])
    fit_s = time.perf_counter() - start
    stages = unfreeze.history["unfreeze_stage"]
    used = unfreeze._ahead.used if unfreeze._ahead is not None else 0
    keras.backend.clear_session()
    per_stage: dict[int, list[list[float]]] = {}
    for stage, times in zip(stages, clock.epochs):
        per_stage.setdefault(stage, []).append(times)
    rows = []
    for stage, epochs_of in per_stage.items():
        rest = [t for times in epochs_of for t in times][1:]
        median = statistics.median(rest)
        rows.append({"stage": stage, "first_step_s": epochs_of[0][0], "median_step_s": median,
                     "change_s": epochs_of[0][0] - median})
    return {"fit_s": fit_s, "stages": rows, "changes_compiled_ahead": used}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the MobileNetV2 cells only")
    parser.add_argument("--cells", nargs="*", choices=sorted(CELLS), default=None)
    args = parser.parse_args(argv)
    if keras.backend.backend() != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    names = args.cells or [c for c in CELLS if not (args.quick and c.endswith("lite0"))]
    doc = {"benchmark": "compile_ahead", "environment": environment(),
           "settings": vars(args), "batch_size": BATCH, "cells": {}}
    for cell in names:
        name, size, schedule, steps, epochs = CELLS[cell]
        runs = {True: [], False: []}
        for _ in range(args.repeats):
            for ahead in (True, False):  # interleaved: both see the same machine
                runs[ahead].append(fit_once(name, size, schedule, steps, epochs, ahead))
        ahead_s = statistics.median(r["fit_s"] for r in runs[True])
        off_s = statistics.median(r["fit_s"] for r in runs[False])
        doc["cells"][cell] = {
            "backbone": f"{name} {size}x{size}", "schedule": str(schedule),
            "steps_per_epoch": steps, "epochs": epochs,
            "fit_s": {"ahead": ahead_s, "retrace": off_s}, "ratio": ahead_s / off_s,
            "runs": {"ahead": runs[True], "retrace": runs[False]},
        }
        print(f"{cell}: {name} {size}x{size} {schedule}, {steps} steps x {epochs} epochs, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"  fit {ahead_s:.1f} s compiled ahead, {off_s:.1f} s without: "
              f"{ahead_s / off_s:.2f}x (median of {args.repeats})", flush=True)
        for label, key in (("ahead  ", True), ("retrace", False)):
            for r in runs[key]:
                cells = "; ".join(f"stage {s['stage']}: change {s['change_s']:.2f} s, step "
                                  f"{s['median_step_s'] * 1e3:.0f} ms" for s in r["stages"])
                print(f"  {label} {r['fit_s']:.1f} s ({r['changes_compiled_ahead']} changes "
                      f"compiled ahead): {cells}", flush=True)
    write_json("compile_ahead.json", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

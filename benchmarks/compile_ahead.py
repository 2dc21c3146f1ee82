"""What preparing each stage's step ahead saves on JAX and TensorFlow: whole fits, with and
without.

``ProgressiveUnfreeze(compile_ahead=True)`` (the default) traces the next stage's train step once
a stage's first step has begun and lets XLA compile it (JAX), or TensorFlow instantiate it, in a
background thread while the stage trains; ``compile_ahead=False`` traces each stage at its first
step, as keras-tlft 0.2 did. The background work shares the CPU with the steps, and the trace
runs in fit's own thread, so the question is the whole fit's wall time, not only the stage
change's. Each cell fits the same model from the same weights both ways,
interleaved, ``--repeats`` times, in one process:

- ``two_phase_short``: MobileNetV2 96x96 (``weights=None``), ``{0: "none", 2: "all"}``, 6 steps an
  epoch, 4 epochs: the frozen stage (12 steps) is shorter than the compile it hides;
- ``two_phase_long``: the same with 20 steps an epoch;
- ``gradual``: ``{0: "none", 1: 1, 2: 3, 3: 6, 4: "all"}``, 6 steps an epoch, 5 epochs: four
  changes, one epoch each;
- ``gradual_lite0`` (not with ``--quick``): EfficientNet-Lite0 64x64 (``weights=None``),
  ``"gradual:every=1"`` over 6 epochs of 8 steps;
- only when named with ``--cells``, longer stages: ``two_phase_mid`` (12 steps an epoch: 24
  frozen steps), ``two_phase_lite0`` (EfficientNet-Lite0 64x64, 40 frozen steps) and
  ``gradual_long`` (``{0: "none", 2: 1, 4: 3, 6: "all"}``, 20 steps an epoch, 8 epochs: three
  changes after 40 steps each).

Prints per cell the fit times and their ratio (ahead / not), the same from ``on_train_begin`` to
``on_train_end`` (the part the callback can change: with a ``PyDataset`` on TensorFlow, ``fit``
took about 4 s more after the last epoch in either mode), each stage change (its first step
less the stage's median step) and the median step of each stage (every step but each stage's
first, so that steps slowed by a background compile count). Batch 16, the same batch repeated
(on JAX as a ``PyDataset``; on TensorFlow as arrays, since there the ``PyDataset``'s feeding
added up to 4 s to the first step of random epochs, in either mode).

    KERAS_BACKEND=jax python benchmarks/compile_ahead.py [--quick] [--repeats 2]
    KERAS_BACKEND=tensorflow python benchmarks/compile_ahead.py --threads 1 [--quick]
    KERAS_BACKEND=tensorflow python benchmarks/compile_ahead.py --force   # every core busy
    KERAS_BACKEND=tensorflow python benchmarks/compile_ahead.py --force --repeats 3 \
        --cells two_phase_mid two_phase_lite0 gradual_long --out-suffix _longer_stages

On TensorFlow the callback prepares ahead only with a core to spare (``--threads 1`` on this
2-core machine leaves one); ``--force`` measures it where it would not.

Writes ``benchmarks/results/compile_ahead.json`` (JAX), ``compile_ahead_tensorflow.json`` or
``compile_ahead_tensorflow_threads1.json`` (``--out-suffix`` appended to the name).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402
from callback_cost import limit_threads  # noqa: E402

from keras_tlft import ProgressiveUnfreeze, build_model  # noqa: E402
from keras_tlft.reporting.bench import repeated_batch  # noqa: E402

CELLS = {
    "two_phase_short": ("mobilenet_v2", 96, {0: "none", 2: "all"}, 6, 4),
    "two_phase_long": ("mobilenet_v2", 96, {0: "none", 2: "all"}, 20, 4),
    "gradual": ("mobilenet_v2", 96, {0: "none", 1: 1, 2: 3, 3: 6, 4: "all"}, 6, 5),
    "gradual_lite0": ("efficientnet_lite0", 64, "gradual:every=1", 8, 6),
    # Longer stages, run only when named (--cells): is there a stage length from which
    # TensorFlow on every core gains (--force)?
    "two_phase_mid": ("mobilenet_v2", 96, {0: "none", 2: "all"}, 12, 4),
    "two_phase_lite0": ("efficientnet_lite0", 64, {0: "none", 2: "all"}, 20, 4),
    "gradual_long": ("mobilenet_v2", 96, {0: "none", 2: 1, 4: 3, 6: "all"}, 20, 8),
}
DEFAULT = ("two_phase_short", "two_phase_long", "gradual", "gradual_lite0")
BATCH = 16


class StepTimes(keras.callbacks.Callback):
    """Each epoch's step times (batch end to batch end, the first from the epoch's start)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[list[float]] = []

    def on_train_begin(self, logs=None):
        self.began = time.perf_counter()

    def on_train_end(self, logs=None):
        self.train_s = time.perf_counter() - self.began

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
    if keras.backend.backend() == "jax":
        model.fit(repeated_batch(x, y, steps), epochs=epochs, verbose=0,
                  callbacks=[unfreeze, clock])
    else:  # arrays: a PyDataset's feeding adds up to 4 s at random epochs' starts on TensorFlow
        model.fit(np.tile(x, (steps, 1, 1, 1)), np.tile(y, steps), batch_size=BATCH,
                  epochs=epochs, verbose=0, shuffle=False, callbacks=[unfreeze, clock])
    fit_s = time.perf_counter() - start
    stages = unfreeze.history["unfreeze_stage"]
    used = unfreeze._ahead.used if unfreeze._ahead is not None else 0
    traced_s = unfreeze._ahead.seconds if unfreeze._ahead is not None else 0.0
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
    return {"fit_s": fit_s, "train_s": clock.train_s, "stages": rows,
            "changes_compiled_ahead": used,
            "traced_ahead_s": traced_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the MobileNetV2 cells only")
    parser.add_argument("--cells", nargs="*", choices=sorted(CELLS), default=None)
    parser.add_argument("--threads", type=int, default=0,
                        help="compute threads (0: the backend's default, every core)")
    parser.add_argument("--force", action="store_true",
                        help="TensorFlow: prepare ahead even with no core spare (the callback "
                             "does not, see keras_tlft.callbacks.compile_ahead.spare_core)")
    parser.add_argument("--out-suffix", default="",
                        help="appended to the result file's name (a run of other cells)")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    if args.force:
        import keras_tlft.callbacks.compile_ahead as ahead_module

        ahead_module.spare_core = lambda: True
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        parser.error("run with KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow")
    names = args.cells or [c for c in DEFAULT if not (args.quick and c.endswith("lite0"))]
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
        train = [statistics.median(r["train_s"] for r in runs[key]) for key in (True, False)]
        doc["cells"][cell] = {
            "backbone": f"{name} {size}x{size}", "schedule": str(schedule),
            "steps_per_epoch": steps, "epochs": epochs,
            "fit_s": {"ahead": ahead_s, "retrace": off_s}, "ratio": ahead_s / off_s,
            "train_s": {"ahead": train[0], "retrace": train[1]}, "train_ratio": train[0] / train[1],
            "runs": {"ahead": runs[True], "retrace": runs[False]},
        }
        print(f"{cell}: {name} {size}x{size} {schedule}, {steps} steps x {epochs} epochs, "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"  fit {ahead_s:.1f} s compiled ahead, {off_s:.1f} s without: "
              f"{ahead_s / off_s:.2f}x (median of {args.repeats}); on_train_begin to on_train_end "
              f"{train[0]:.1f} s against {train[1]:.1f} s: {train[0] / train[1]:.2f}x", flush=True)
        for label, key in (("ahead  ", True), ("retrace", False)):
            for r in runs[key]:
                cells = "; ".join(f"stage {s['stage']}: change {s['change_s']:.2f} s, step "
                                  f"{s['median_step_s'] * 1e3:.0f} ms" for s in r["stages"])
                print(f"  {label} {r['fit_s']:.1f} s, {r['train_s']:.1f} s from train begin to end "
                      f"({r['changes_compiled_ahead']} changes "
                      f"prepared ahead, {r['traced_ahead_s']:.1f} s traced ahead): {cells}",
                      flush=True)
    suffix = ("" if backend == "jax" else f"_{backend}") + (f"_threads{args.threads}"
                                                           if args.threads else "")
    write_json(f"compile_ahead{suffix}{args.out_suffix}.json", doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

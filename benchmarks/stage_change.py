"""Where a stage change's time goes on TensorFlow, and what turning grappler off buys.

MobileNetV2 (96x96, ``weights=None``) trains one batch repeated (batch 16) in one ``fit`` with
``ProgressiveUnfreeze({0: "none", 1: SPEC})``; the first step of epoch 1 pays the retrace.
cProfile around that step splits it into Python tracing (TensorFlow's
``func_graph_from_py_func``: Keras's train step run symbolically) and the rest (the function's
instantiation: grappler's graph optimisation and the kernels' creation, then the step itself).
The stage-change cost is that first step minus the stage's median step, measured without the
profiler (which slows Python); a third, profiled run gives the tracing's share. Each variant runs
``--repeats`` times, interleaved; the table keeps the best of each. Variants:

- ``default``: as Keras and TensorFlow are configured out of the box;
- ``no-grappler``: ``tf.config.optimizer.set_experimental_options({"disable_meta_optimizer":
  True})``, which skips graph optimisation at every trace (it may slow every step).

    python benchmarks/stage_change.py                 # SPEC=all, 10 steps per stage, 2 repeats

Writes ``benchmarks/results/stage_change.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

from keras_tlft import ProgressiveUnfreeze, build_model  # noqa: E402
from keras_tlft.reporting.bench import repeated_batch  # noqa: E402


class ChangeProbe(keras.callbacks.Callback):
    """Step times per epoch; cProfile around the first step of epoch 1."""

    def __init__(self, profiled):
        super().__init__()
        self.times, self.profile, self.profiled = {0: [], 1: []}, None, profiled

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 0 and self.profiled:
            self.profile = cProfile.Profile()
            self.profile.enable()
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times[self.epoch].append(time.perf_counter() - self.start)
        if self.profile is not None and self.epoch == 1 and batch == 0:
            self.profile.disable()


def tracing_seconds(profile) -> float:
    stats = pstats.Stats(profile)
    return sum(row[3] for (path, _, name), row in stats.stats.items()
               if name == "func_graph_from_py_func" and path.endswith("func_graph.py"))


def mobilenet_and_batch(batch: int):
    """MobileNetV2 (96x96, ``weights=None``, seed 0) compiled with Adam 1e-4, and one batch of
    random 0-255 images and labels: the stage-change benchmarks' model and data."""
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 10, input_shape=(96, 96, 3), weights=None)
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, 96, 96, 3)).astype("float32")
    return model, x, rng.integers(0, 10, batch)


def run(spec, steps, batch, profiled=False):
    model, x, y = mobilenet_and_batch(batch)
    probe = ChangeProbe(profiled)
    model.fit(repeated_batch(x, y, steps), epochs=2, verbose=0,
              callbacks=[ProgressiveUnfreeze({0: "none", 1: spec}, stage_change="retrace"),
                         probe])
    steady = statistics.median(probe.times[1][1:])
    first = probe.times[1][0]
    keras.backend.clear_session()
    result = {"frozen_step_ms": statistics.median(probe.times[0][1:]) * 1e3,
              "stage_step_ms": steady * 1e3, "change_seconds": first - steady}
    if profiled:
        result["tracing_share"] = tracing_seconds(probe.profile) / first
    return result


def set_grappler(on: bool) -> None:
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not on})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="all", help="the second stage's unfreeze spec")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="stage_change.json")
    args = parser.parse_args(argv)
    runs = {"default": [], "no-grappler": [], "default, profiled": []}
    for _ in range(args.repeats):
        for variant in runs:
            set_grappler(variant != "no-grappler")
            runs[variant].append(run(args.spec, args.steps, args.batch_size,
                                     profiled="profiled" in variant))
            print(variant, {k: round(v, 3) for k, v in runs[variant][-1].items()},
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    set_grappler(True)
    best = {v: {k: min(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    for variant, b in best.items():
        share = f"   Python tracing {b['tracing_share']:.0%} of it" if "tracing_share" in b else ""
        print(f"{variant:<18} change {b['change_seconds']:.2f} s   frozen step "
              f"{b['frozen_step_ms']:.1f} ms   stage step {b['stage_step_ms']:.1f} ms{share}")
    write_json(args.out, {"benchmark": "stage_change", "environment": environment(),
                          "settings": vars(args), "runs": runs, "best": best})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

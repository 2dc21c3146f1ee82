"""Benchmark 3: `keras-tlft bench` throughput against a plain Keras fit of the same model.

For each backbone, in one process: `run_bench` (the frozen and full phases, stages changed by
`ProgressiveUnfreeze` inside one fit) and a plain `model.fit` of the same model on the same
batch, fed the same way (one batch repeated), frozen then fully trainable (recompiled, as the
Keras guide does). Both sides compile with the same ``jit_compile`` (default ``"auto"``, what
``model.compile`` does by default: no XLA on a TensorFlow CPU). Prints images/s of both and their
ratio (1.00 = no cost), and writes benchmarks/results/throughput.json.

Usage:
    python benchmarks/throughput.py                       # CPU defaults: batch 8, 96x96
    python benchmarks/throughput.py --batch-size 256 --image-size 224 --mixed-precision \\
        --backbones resnet50                               # the GPU figure of the README
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

from keras_tlft import _keras_compat as compat  # noqa: E402
from keras_tlft import build_model  # noqa: E402
from keras_tlft.model.blocks import count_weights  # noqa: E402
from keras_tlft.reporting.bench import device_name, repeated_batch, run_bench  # noqa: E402

DEFAULT_BACKBONES = "mobilenet_v2,resnet50,vgg16,efficientnet_b0"


class StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def plain_keras(name, batch_size, size, steps, warmup, jit, mixed):
    """images/s of a plain `model.fit`: frozen backbone, then all trainable after recompiling."""
    _, on_gpu = device_name()
    policy = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16" if on_gpu else "mixed_bfloat16")
    try:
        model = build_model(name, 10, input_shape=(size, size, 3), weights=None)
        # The batch `run_bench` trains on, fed the same way, so the ratio is the model's alone.
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
        y = rng.integers(0, 10, batch_size)
        result = {}
        backbone = model.get_layer("backbone")
        for phase, trainable in (("frozen", False), ("full", True)):
            backbone.trainable = trainable
            # keras-tlft's default (bn="frozen") keeps BatchNormalization frozen when the
            # backbone trains: the plain fit trains the same weights, so the ratio is like
            # for like (trainable BatchNorm runs in training mode: a different, costlier step).
            for layer in compat.sublayers(backbone):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
            model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                          jit_compile=jit)
            timer = StepTimes()
            model.fit(repeated_batch(x, y, warmup + steps), epochs=1, verbose=0,
                      callbacks=[timer])
            result[phase] = batch_size / statistics.median(timer.times[warmup:])
            result[phase + "_params"] = count_weights(model.trainable_weights)
        return result
    finally:
        keras.mixed_precision.set_global_policy(policy)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=DEFAULT_BACKBONES)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                        help="jit_compile of both sides (default: auto, model.compile's own)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved repeats of both sides; the best of each is kept")
    parser.add_argument("--out", default="throughput.json")
    args = parser.parse_args(argv)
    jit = {"auto": "auto", "on": True, "off": False}[args.jit]

    rows = []
    for name in args.backbones.split(","):
        # Interleaved repeats, the best of each side kept: a shared machine's load only slows.
        reports, plains = [], []
        for _ in range(args.repeats):
            reports.append(run_bench(name, batch_size=args.batch_size,
                                     image_size=args.image_size, steps=args.steps,
                                     warmup_steps=args.warmup_steps,
                                     mixed_precision=args.mixed_precision, jit_compile=jit,
                                     phases=("frozen", "full")))
            keras.backend.clear_session()
            plains.append(plain_keras(name, args.batch_size, args.image_size, args.steps,
                                      args.warmup_steps, jit, args.mixed_precision))
            keras.backend.clear_session()
        for i, phase in enumerate(reports[0].phases):
            best = max((r.phases[i] for r in reports), key=lambda p: p.images_per_second)
            plain = max(p[phase.phase] for p in plains)
            row = {"backbone": name, "phase": phase.phase,
                   "tlft_images_per_second": best.images_per_second,
                   "keras_images_per_second": plain,
                   "ratio": best.images_per_second / plain,
                   "repeats": args.repeats,
                   "jit_compile": reports[0].jit_compile,
                   "trainable_params": phase.trainable_params,
                   "keras_trainable_params": plains[0][phase.phase + "_params"],
                   "peak_memory_mb": best.peak_memory_mb,
                   "stage_change_seconds": best.stage_change_seconds,
                   "trace_seconds": best.trace_seconds,
                   "load_average": os.getloadavg()}
            rows.append(row)
            print(f"{name:<16} {phase.phase:<7} keras-tlft {row['tlft_images_per_second']:8.1f} "
                  f"img/s   plain Keras {row['keras_images_per_second']:8.1f} img/s   ratio "
                  f"{row['ratio']:.3f}   load {os.getloadavg()[0]:.1f}", flush=True)
    write_json(args.out, {"benchmark": "throughput", "environment": environment(),
                          "settings": vars(args), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

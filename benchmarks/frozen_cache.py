"""Frozen phase: N epochs of plain ``model.fit`` against ``fit_frozen`` (one backbone pass).

One process, the same synthetic data (learnable: each class has its own tint and stripe
direction), the same seeds. A MobileNetV2 model (``weights=None``, its default 224x224 input,
the default ``gap`` head) is trained for max(N) frozen epochs the plain Keras way and, rebuilt
from the same seed, with :func:`keras_tlft.fit_frozen`; a callback reads the clock at the end
of every epoch, so the time of N epochs is the time from the call to the end of epoch N (a run
of N epochs would do the same work: same seeds, same batches). Each way runs ``--repeats``
times, interleaved, and the table keeps the fastest (the machine is shared). Both shuffle
(Keras draws the plain run's order, NumPy the cached run's), so validation accuracies agree
within noise; ``--no-shuffle`` makes them agree to float rounding.

The data set is small (384 + 128 images by default) so that the plain run, one MobileNetV2
forward pass over every image per epoch, finishes in minutes on two CPU cores.

The theoretical ratio for N epochs is ``N * (B + H) / (B + N * H)``, with ``B`` the measured
one-pass extraction time (training and validation data) and ``H`` the measured per-epoch time
of the head on cached features: what caching saves if a plain epoch costs one backbone pass
plus the head. A plain training epoch can cost more than that (``plain s/ep`` against
``backbone s`` + ``head s/ep``), and the first plain epoch also traces the whole model's train
and test steps, so the measured ratio can exceed this bound.

    python benchmarks/frozen_cache.py            # 384 training + 128 validation images, N=1,4,10
    python benchmarks/frozen_cache.py --quick    # a smoke run: 96 + 32 images, N=1,4

Writes ``benchmarks/results/frozen_cache.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import atomic_write  # noqa: E402
from keras_tlft.model.graph import split_at_backbone  # noqa: E402
from keras_tlft.training.cache import fit_frozen  # noqa: E402

CLASSES = 4
SEED = 1337
RESULTS = Path(__file__).parent / "results" / "frozen_cache.json"


def synthetic_images(n: int, size: int, seed: int):
    """Noisy images whose class shows as a colour tint and a stripe direction; uint8 pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    tints = np.array([[40, -20, -20], [-20, 40, -20], [-20, -20, 40], [25, 25, -40]], "float32")
    grid = np.arange(size, dtype="float32")
    directions = [(1, 0), (0, 1), (1, 1), (1, -1)]
    stripes = np.stack(
        [np.sin((a * grid[:, None] + b * grid[None, :]) / 4.0) * 30 for a, b in directions]
    )
    images = np.empty((n, size, size, 3), "uint8")
    for start in range(0, n, 64):
        part = slice(start, start + 64)
        y = labels[part]
        noise = rng.normal(128, 45, (len(y), size, size, 3)).astype("float32")
        pixels = noise + tints[y][:, None, None, :] + stripes[y][..., None]
        images[part] = np.clip(pixels, 0, 255).astype("uint8")
    return images, labels


def fresh_model(backbone_weights=None):
    keras.utils.set_random_seed(SEED)
    model = tlft.build_model("mobilenet_v2", num_classes=CLASSES, weights=None)
    if backbone_weights is not None:
        model.get_layer("backbone").set_weights(backbone_weights)
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def calibrated_backbone(images):
    """Backbone weights whose BatchNorm statistics fit ``images``.

    With ``weights=None`` the moving statistics are 0 and 1, and the activations of a random
    MobileNetV2 shrink to about 1e-12 by its last block: a head learns nothing from them. Setting
    each BatchNorm's statistics from one batch (what pretraining gives) makes the random
    features usable, so that the accuracies compared below mean something.
    """
    model = fresh_model()
    backbone = model.get_layer("backbone")
    norms = [
        layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in norms:
        layer.trainable, layer.momentum = True, 0.0
    features, _ = split_at_backbone(model)
    features(images, training=True)
    for layer in norms:
        layer.trainable, layer.momentum = False, 0.99
    return backbone.get_weights()


class EpochClock(keras.callbacks.Callback):
    """Seconds from ``start`` to the end of each epoch."""

    def __init__(self, start):
        super().__init__()
        self.start, self.ends = start, []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter() - self.start)


def run_plain(data, weights, epochs, batch_size, shuffle):
    """Seconds to the end of each epoch and validation accuracies, plain ``model.fit``."""
    (x, y), val = data
    model = fresh_model(weights)
    keras.utils.set_random_seed(SEED)
    clock = EpochClock(time.perf_counter())
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_data=val,
                        shuffle=shuffle, callbacks=[clock], verbose=0)
    return clock.ends, history.history["val_accuracy"]


def run_cached(data, weights, epochs, batch_size, shuffle):
    """The same with ``fit_frozen``, plus the cache's report and the full model's accuracy."""
    (x, y), val = data
    model = fresh_model(weights)
    keras.utils.set_random_seed(SEED)
    clock = EpochClock(time.perf_counter())
    history = fit_frozen(model, x, y, epochs=epochs, batch_size=batch_size, validation_data=val,
                         shuffle=shuffle, callbacks=[clock], verbose=0)
    evaluated = model.evaluate(*val, batch_size=batch_size, verbose=0, return_dict=True)
    return clock.ends, history, evaluated["accuracy"]


def traced_peak(data, weights, batch_size):
    """Peak bytes NumPy allocates during a one-epoch ``fit_frozen`` (a separate run, since
    tracing allocations slows them down)."""
    (x, y), val = data
    model = fresh_model(weights)
    tracemalloc.start()
    fit_frozen(model, x, y, epochs=1, batch_size=batch_size, validation_data=val, verbose=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def warm_up(data, weights, batch_size):
    """One tiny run of each kind, so that neither pays the process's one-time costs."""
    (x, y), val = data
    small = ((x[:batch_size], y[:batch_size]), (val[0][:batch_size], val[1][:batch_size]))
    run_plain(small, weights, 1, batch_size, True)
    run_cached(small, weights, 1, batch_size, True)


def row(n, plains, cacheds):
    """The figures for N epochs: each way's fastest repeat to the end of epoch N."""
    plain_ends, plain_acc = min(plains, key=lambda run: run[0][n - 1])
    cached_ends, history, _ = min(cacheds, key=lambda run: run[0][n - 1])
    backbone_s = history.params["feature_cache"]["extraction_seconds"]
    head_s = (cached_ends[n - 1] - backbone_s) / n
    return {
        "epochs": n,
        "plain_s": plain_ends[n - 1],
        "cached_s": cached_ends[n - 1],
        "ratio": plain_ends[n - 1] / cached_ends[n - 1],
        "plain_epoch_s": plain_ends[n - 1] / n,
        "bound_ratio": n * (backbone_s + head_s) / (backbone_s + n * head_s),
        "backbone_pass_s": backbone_s,
        "head_epoch_s": head_s,
        "val_acc_plain": plain_acc[n - 1],
        "val_acc_cached": history.history["val_accuracy"][n - 1],
    }


def print_table(rows, meta):
    print(
        f"\nFrozen phase, MobileNetV2 {meta['input_shape']} weights=None, "
        f"{meta['train']} training + {meta['val']} validation images, batch {meta['batch_size']}, "
        f"{meta['cpus']} CPU cores, backend {meta['backend']}"
    )
    head = (
        f"{'N':>3} {'plain s':>8} {'cached s':>8} {'ratio':>6} {'bound':>6} {'plain s/ep':>10} "
        f"{'backbone s':>10} {'head s/ep':>9} {'val acc plain':>13} {'val acc cached':>14}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['epochs']:>3} {r['plain_s']:>8.1f} {r['cached_s']:>8.1f} {r['ratio']:>6.2f} "
            f"{r['bound_ratio']:>6.2f} {r['plain_epoch_s']:>10.1f} {r['backbone_pass_s']:>10.1f} "
            f"{r['head_epoch_s']:>9.2f} "
            f"{r['val_acc_plain']:>13.4f} {r['val_acc_cached']:>14.4f}"
        )
    mib = 2**20
    print(
        f"\nAfter the frozen phase: full model.evaluate accuracy "
        f"{meta['val_acc_full_model_after_cached']:.4f}, head on cached features "
        f"{meta['val_acc_head_on_cached_features']:.4f}"
    )
    print(
        f"Cached features: {meta['cache_bytes'] / mib:.1f} MiB, kept in "
        f"{' and '.join(sorted(set(meta['cache_storage'])))} "
        f"({meta['bytes_per_image']} bytes per image); peak NumPy allocation during "
        f"fit_frozen: {meta['traced_peak_bytes'] / mib:.1f} MiB; process max RSS: "
        f"{meta['max_rss_bytes'] / mib:.0f} MiB"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="96 + 32 images, N = 1, 4")
    parser.add_argument("--train", type=int, default=384, help="training images")
    parser.add_argument("--val", type=int, default=128, help="validation images")
    parser.add_argument("--epochs", default="1,4,10", help="comma-separated N")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs of each way; the table keeps the fastest (a shared machine)")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="shuffle=False in both: the accuracies then agree to the bit")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.val, args.epochs, args.repeats = 96, 32, "1,4", 1
    epochs = [int(n) for n in args.epochs.split(",")]

    size = tlft.get_backbone("mobilenet_v2").default_input_shape[0]
    data = (synthetic_images(args.train, size, 0), synthetic_images(args.val, size, 1))
    weights = calibrated_backbone(data[0][0][: args.batch_size])
    warm_up(data, weights, args.batch_size)
    top, shuffle = max(epochs), not args.no_shuffle
    plains, cacheds = [], []
    for repeat in range(args.repeats):  # interleaved, so that both see the same machine load
        plains.append(run_plain(data, weights, top, args.batch_size, shuffle))
        cacheds.append(run_cached(data, weights, top, args.batch_size, shuffle))
        print(f"repeat {repeat + 1}: plain {plains[-1][0][-1]:.1f} s, cached "
              f"{cacheds[-1][0][-1]:.1f} s for {top} epochs", file=sys.stderr)
    rows = [row(n, plains, cacheds) for n in epochs]
    cached = cacheds[0]
    cache = cached[1].params["feature_cache"]
    meta = {
        "backbone": "mobilenet_v2",
        "input_shape": [size, size, 3],
        "train": args.train,
        "val": args.val,
        "batch_size": args.batch_size,
        "quick": args.quick,
        "cpus": os.cpu_count(),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "shuffle": shuffle,
        "repeats": args.repeats,
        "cache_bytes": cache["bytes"],
        "cache_storage": cache["storage"],
        "bytes_per_image": cache["bytes"] // (args.train + args.val),
        "val_acc_full_model_after_cached": cached[2],
        "val_acc_head_on_cached_features": cached[1].history["val_accuracy"][-1],
        "traced_peak_bytes": traced_peak(data, weights, args.batch_size),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    print_table(rows, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    curves = {
        "plain_epoch_end_s": [run[0] for run in plains],
        "cached_epoch_end_s": [run[0] for run in cacheds],
        "extraction_s": [run[1].params["feature_cache"]["extraction_seconds"] for run in cacheds],
        "val_acc_plain": [run[1] for run in plains],
        "val_acc_cached": [run[1].history["val_accuracy"] for run in cacheds],
    }
    report = {"meta": meta, "rows": rows, "curves": curves}
    with atomic_write(args.out) as f:
        f.write(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()

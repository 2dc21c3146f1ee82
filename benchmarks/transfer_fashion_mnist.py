"""Benchmark 1: transfer on real data, offline (Fashion-MNIST from Debian's dataset-fashion-mnist).

A small CNN backbone is pretrained on classes 0-4 (cached), then classes 5-9 are learned from few
labels per class, and every recipe is scored on all test images of classes 5-9:

- scratch:      the same architecture from random weights, everything trained;
- linear probe: backbone frozen, only the head trains;
- two-phase:    the Keras guide's recipe done the plain way: head first, then recompile with
                everything trainable at 1e-5 and a second fit;
- full:         everything trainable from the start, at the head's learning rate / 10;
- progressive:  `ProgressiveUnfreeze` in one fit: the "gradual" preset at keras-tlft 0.1's
                default rates (`backbone_lr_ratio=1`);
- lp_ft, ulmfit, layer_decay: `ProgressiveUnfreeze` with the literature presets of those names,
                with their defaults (LP-FT: 5 probe epochs, then everything at 1e-5; ULMFiT: a
                block per epoch, rates / 2.6 per block, slanted triangular rates per stage;
                layer decay: everything from epoch 0, block k from the top at 0.75 ** k).

Usage:
    python benchmarks/transfer_fashion_mnist.py            # defaults: 3 seeds, 25/100/400 labels
    python benchmarks/transfer_fashion_mnist.py --quick    # 1 seed, 100 labels, fewer epochs
    python benchmarks/transfer_fashion_mnist.py --recipes progressive,lp_ft,ulmfit,layer_decay

Prints a table (mean and spread of test accuracy, wall time) and writes
benchmarks/results/transfer_fashion_mnist.json and a PNG of learning curves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, Curve, environment, plot_curves, write_json  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import (  # noqa: E402
    BackboneSpec,
    BlockRule,  # noqa: E402
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
CACHE = RESULTS / "cache"
PRETRAINED = CACHE / "fmnist_cnn_classes0-4.weights.h5"
# The recipes trained by ProgressiveUnfreeze in one fit, and the preset each one uses.
# "progressive" is keras-tlft 0.1's default (the ratio 1 its published figures were measured at).
PRESETS = {"progressive": "gradual:backbone_lr_ratio=1", "lp_ft": "lp_ft", "ulmfit": "ulmfit",
           "layer_decay": "layer_decay"}
RECIPES = ("scratch", "linear_probe", "two_phase", "full", *PRESETS)


def load_fashion_mnist():
    """Keras's own loader, fed from Debian's files placed in Keras's cache folder."""
    place_fashion_mnist()
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return (x_train[..., None], y_train), (x_test[..., None], y_test)


def place_fashion_mnist():
    """Debian's Fashion-MNIST files copied into Keras's cache folder where missing, so that
    ``keras.datasets.fashion_mnist.load_data()`` reads them offline (the docs' snippets too)."""
    cache = Path(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras"))) / "datasets"
    target = cache / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (target / name).exists():
            if not (DEBIAN_DIR / name).exists():
                raise SystemExit(
                    f"Fashion-MNIST not found: {DEBIAN_DIR / name}. Install it with "
                    "`apt-get install -y dataset-fashion-mnist` (or let Keras download it online)."
                )
            shutil.copy(DEBIAN_DIR / name, target / name)


def build_cnn(input_shape, weights, include_top):
    """The small backbone: three conv blocks, named as the block rules expect."""
    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate((32, 64, 128), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv1")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn1")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu1")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv2")(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn2")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu2")(x)
        if i < 3:
            x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    model = keras.Model(inputs, x, name="fmnist_cnn")
    if weights is not None:
        model.load_weights(weights)
    return model


SPEC = BackboneSpec(
    name="fmnist_cnn", builder=build_cnn, source="benchmark", family="cnn",
    description="3-block CNN pretrained on Fashion-MNIST classes 0-4",
    default_input_shape=(28, 28, 1), min_input_size=28, preprocessing="rescale",
    blocks=tuple(BlockRule(f"block{i}", f"^block{i}_") for i in (1, 2, 3)),
)


def pretrain(x, y, epochs: int):
    """Train the backbone on classes 0-4 once and cache its weights."""
    if PRETRAINED.exists():
        return 0.0
    CACHE.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1234)
    model = tlft.build_model(SPEC, 5, weights=None)
    model.get_layer("backbone").trainable = True
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    tmp = PRETRAINED.with_name("tmp-" + PRETRAINED.name)
    model.get_layer("backbone").save_weights(tmp)
    tmp.replace(PRETRAINED)
    return seconds


def run_recipe(recipe, x, y, x_test, y_test, epochs, lr, seed, with_curve=False):
    """Train one recipe; returns test accuracy, wall seconds, per-epoch curve (when asked: it
    costs an evaluation per epoch, kept out of the wall time) and the stage changes."""
    keras.utils.set_random_seed(seed)
    weights = None if recipe == "scratch" else str(PRETRAINED)
    model = tlft.build_model(SPEC, 5, head="gap,dense:5:softmax", weights=weights)
    backbone = model.get_layer("backbone")
    loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    curve = Curve(x_test, y_test, batch_size=512)
    fit = dict(batch_size=32, verbose=0, callbacks=[curve] if with_curve else [])
    changes = []
    start = time.perf_counter()
    if recipe in ("scratch", "full"):
        backbone.trainable = True
        rate = lr if recipe == "scratch" else lr / 10
        model.compile(keras.optimizers.Adam(rate), loss=loss, metrics=metrics)
        model.fit(x, y, epochs=epochs, **fit)
    elif recipe == "linear_probe":
        model.compile(keras.optimizers.Adam(lr), loss=loss, metrics=metrics)
        model.fit(x, y, epochs=epochs, **fit)
    elif recipe == "two_phase":
        half = epochs // 2
        model.compile(keras.optimizers.Adam(lr), loss=loss, metrics=metrics)
        model.fit(x, y, epochs=half, **fit)
        backbone.trainable = True
        model.compile(keras.optimizers.Adam(1e-5), loss=loss, metrics=metrics)
        model.fit(x, y, epochs=epochs, initial_epoch=half, **fit)
        changes = [half]
    else:
        model.compile(keras.optimizers.Adam(lr), loss=loss, metrics=metrics)
        fit["callbacks"] = [tlft.ProgressiveUnfreeze(PRESETS[recipe]), *fit["callbacks"]]
        history = model.fit(x, y, epochs=epochs, **fit)
        states = history.history.get("unfreeze_stage", [])
        changes = [e for e in range(1, len(states)) if states[e] != states[e - 1]]
    seconds = time.perf_counter() - start - curve.seconds
    acc = float(model.evaluate(x_test, y_test, batch_size=512, verbose=0)[1])
    return {"accuracy": acc, "seconds": seconds, "curve": curve.points, "stage_changes": changes}


def transfer_task(pretrain_epochs: int):
    """The backbone pretrained on classes 0-4 (cached), then the task: the training images of
    classes 5-9 and their test images, labels 0-4. Returns the pretraining seconds (0 when
    cached), ``(x, y)`` for training and ``(x, y)`` for testing."""
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    source, target = y_train < 5, y_train >= 5
    pretrain_s = pretrain(x_train[source], y_train[source], pretrain_epochs)
    test = y_test >= 5
    return (pretrain_s, (x_train[target], y_train[target] - 5),
            (x_test[test], y_test[test] - 5))


def few_labels(x, y, per_class, seed):
    """``per_class`` examples of each class, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                          for c in np.unique(y)])
    rng.shuffle(idx)
    return x[idx], y[idx]


def summarize(runs):
    accs = [r["accuracy"] for r in runs]
    secs = [r["seconds"] for r in runs]
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return {"accuracy_mean": statistics.fmean(accs), "accuracy_std": spread,
            "seconds_mean": statistics.fmean(secs), "runs": len(runs)}


def plot(curves: dict, changes: dict, path: Path, title: str) -> None:
    plot_curves(curves, changes, path, title, "test accuracy, classes 5-9")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 100 labels, 6 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", default="25,100,400", help="labels per class, comma-separated")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="recipes to run, comma-separated (default: all: %(default)s)")
    parser.add_argument("--stem", default=None,
                        help="output file name stem (default: transfer_fashion_mnist[_quick])")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.labels, args.epochs = 1, "100", 6
    labels = [int(n) for n in args.labels.split(",")]
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown or not recipes:
        parser.error(f"--recipes takes names from {', '.join(RECIPES)}. "
                     f"Received: --recipes={args.recipes}")
    started = time.perf_counter()

    pretrain_s, (x_t, y_t), (x_eval, y_eval) = transfer_task(args.pretrain_epochs)

    results, curves, changes = [], {}, {}
    plot_labels = 100 if 100 in labels else labels[0]
    for per_class in labels:
        for recipe in recipes:
            runs = []
            for seed in range(args.seeds):
                x, y = few_labels(x_t, y_t, per_class, seed)
                run = run_recipe(recipe, x, y, x_eval, y_eval, args.epochs, args.lr, seed,
                                 with_curve=per_class == plot_labels and seed == 0)
                runs.append(run)
                keras.backend.clear_session()
            row = {"labels_per_class": per_class, "recipe": recipe, **summarize(runs),
                   "accuracies": [r["accuracy"] for r in runs]}
            results.append(row)
            print(f"{per_class:>4} labels/class  {recipe:<13} acc {row['accuracy_mean']:.4f} "
                  f"± {row['accuracy_std']:.4f}  {row['seconds_mean']:6.1f} s", flush=True)
            if per_class == plot_labels:
                curves[recipe], changes[recipe] = runs[0]["curve"], runs[0]["stage_changes"]

    stem = args.stem or "transfer_fashion_mnist" + ("_quick" if args.quick else "")
    png = RESULTS / f"{stem}.png"
    print_table(results, args)
    total_s = time.perf_counter() - started
    print(f"total wall time {total_s / 60:.1f} min (pretraining {pretrain_s:.0f} s"
          f"{', cached' if not pretrain_s else ''})", flush=True)
    # The figures first: a missing plotting library must not cost the run.
    write_json(f"{stem}.json", {
        "benchmark": "transfer_fashion_mnist", "environment": environment(),
        "settings": {**vars(args), "test_images": int(len(y_eval)),
                     "pretrain_seconds": pretrain_s, "total_seconds": total_s},
        "results": results, "plot": str(png.name),
        "curves": {"labels_per_class": plot_labels, "seed": 0, "test_accuracy": curves,
                   "stage_changes": changes},
    })
    try:
        plot(curves, changes, png, f"Fashion-MNIST 5-9 from {plot_labels} labels/class "
                                   "(seed 0); dotted: stage changes")
    except ImportError as exc:
        print(f"The learning-curve plot needs matplotlib ({exc}); the table and JSON are "
              "written. Install it with `pip install 'keras-tlft[benchmarks]'`.", file=sys.stderr)
        return 1
    print(f"wrote {png}", file=sys.stderr)
    return 0


def print_table(results, args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fashion-MNIST transfer (classes 0-4 -> 5-9), {args.seeds} seed(s), "
                        f"{args.epochs} epochs")
    for col in ("labels/class", "recipe", "test accuracy", "spread (std)", "wall s"):
        table.add_column(col, justify="right" if col != "recipe" else "left")
    for r in results:
        table.add_row(str(r["labels_per_class"]), r["recipe"], f"{r['accuracy_mean']:.4f}",
                      f"{r['accuracy_std']:.4f}", f"{r['seconds_mean']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    raise SystemExit(main())

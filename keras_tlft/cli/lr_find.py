"""``keras-tlft lr-find``: the learning-rate range test on a registered backbone.

Parsing and rendering only: the model comes from :func:`keras_tlft.build_model`, the test from
:func:`keras_tlft.lr_find`. Keras is imported only when the verb runs.
"""

from __future__ import annotations

import argparse
import os

from rich.console import Console
from rich.table import Table

from keras_tlft.cli._common import (
    EXIT_OK,
    UsageError,
    _positive_int,
    _print_json,
    _quiet_tensorflow,
    print_figures,
)


def add_parser(sub) -> None:
    """Register the ``lr-find`` verb on the CLI's subparsers."""
    p = sub.add_parser(
        "lr-find",
        help="learning-rate range test (fastai's lr_find): suggested rates, per stage",
        description="Run the learning-rate range test on a backbone + head built as build_model "
        "builds it: the learning rate grows exponentially over --steps steps, the smoothed loss "
        "is recorded until it diverges, and the steepest-descent and minimum/10 learning rates "
        "are suggested, for the head and, with --schedule, for each stage. Data: synthetic "
        "images and labels (as bench uses), or --data FILE.npz with arrays x and y.",
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
    from keras_tlft.model.assembly import parse_input_shape
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
    x, y = _load_data(args.data) if args.data else (None, None)
    num_classes = args.num_classes or (int(y.max()) + 1 if y is not None else 10)
    resolve_head(args.head, num_classes)
    if x is not None and shape is None:
        shape = tuple(x.shape[1:])
    shape = shape or tuple(spec.default_input_shape)

    _quiet_tensorflow()
    import keras
    import numpy as np

    from keras_tlft import build_model, lr_find

    if x is None:
        rng = np.random.default_rng(0)
        n = args.batch_size * 8
        x = rng.uniform(0, 255, (n, *shape)).astype("float32")
        y = rng.integers(0, num_classes, n)
    weights = None if args.weights in (None, "none", "None") else args.weights
    model = build_model(spec, num_classes, head=args.head, input_shape=shape, weights=weights)
    loss = "binary_crossentropy" if num_classes == 1 else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.get(args.optimizer), loss)
    result = lr_find(model, x, y, batch_size=args.batch_size, steps=args.steps,
                     start_lr=args.start_lr, end_lr=args.end_lr, schedule=args.schedule)
    if args.plot:
        result.plot(args.plot)
    if args.json:
        doc = result.to_json()
        doc.update(backbone=spec.key, data=args.data or "synthetic", input_shape=list(shape),
                   plot=args.plot)
        return _print_json(doc)
    _render(result, spec.key, args, out)
    return EXIT_OK


def _load_data(path: str):
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"--data file {path!r} does not exist. Received: --data={path!r}")
    try:
        with np.load(path) as data:
            if "x" not in data or "y" not in data:
                raise UsageError(f"--data must be an .npz file with arrays 'x' and 'y'. "
                                 f"Received: arrays {sorted(data.files)} in {path!r}")
            x, y = data["x"], data["y"].reshape(-1)
    except (OSError, ValueError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"--data must be an .npz file (numpy.savez) with arrays 'x' and 'y': "
                         f"{exc}. Received: --data={path!r}") from None
    if len(x) != len(y) or x.ndim < 2:
        raise UsageError(f"--data: x must hold one sample per label. Received: x shape "
                         f"{x.shape}, y shape {y.shape}")
    return x, y


def _render(result, key: str, args: argparse.Namespace, out: Console) -> None:
    out.print(f"[bold]{key}[/bold] learning-rate range test: {result.steps} steps, "
              f"{result.start_lr:g} to {result.end_lr:g}, batch {args.batch_size}, "
              f"data {args.data or 'synthetic'}")
    table = Table()
    for col in ("test", "unfreeze", "blocks", "trainable", "steps", "end", "steepest",
                "minimum/10"):
        table.add_column(col, no_wrap=True, justify="left" if col in (
            "test", "unfreeze", "blocks", "end") else "right")
    for t in result.tests:
        blocks = "-" if not t.blocks else t.blocks[0] if len(t.blocks) == 1 else (
            f"{t.blocks[0]}..{t.blocks[-1]} ({len(t.blocks)})")
        table.add_row(t.name, t.unfreeze or "-", blocks, f"{t.trainable_params:,}",
                      str(len(t.losses)), "diverged" if t.diverged else "all steps",
                      _lr(t.steepest), _lr(t.minimum_tenth))
    print_figures(out, table)
    if args.plot:
        out.print(f"plot: {args.plot}")


def _lr(value) -> str:
    return "-" if value is None else f"{value:.3g}"

"""The learning-rate range test (fastai's ``lr_find``, Lightning's ``Tuner.lr_find``).

The learning rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps`` training
steps; the loss is smoothed as fastai smooths it (an exponential moving average, debiased) and the
test stops when it diverges (more than ``diverge`` times the best smoothed loss, or not finite).
Suggested: the learning rate of steepest descent and the one of the minimum divided by 10.
The results (curves, suggestions, JSON, plot) and that maths are in :mod:`keras_tlft.lr_result`.

With a :class:`~keras_tlft.ProgressiveUnfreeze` schedule, the test runs once per stage: the
stage's ``trainable`` flags are applied (as the callback applies them), the test runs, and the
flags are put back. Every test starts from the model's weights as they were, and afterwards the
model is exactly as before: every variable (weights, BatchNorm statistics, metric and seed
state) is restored bit for bit, and the model's own optimizer is never touched, since the test
trains with a fresh copy of it (same class and settings, learning rate driven by the test).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keras_tlft.model.input_range import check_input_range, first_inputs
from keras_tlft.training.lr_result import LRFinderResult, RangeTest, smooth_losses, suggest

__all__ = ["LRFinderResult", "RangeTest", "lr_find", "smooth_losses", "suggest"]


# ---------------------------------------------------------------------- the test


def lr_find(
    model,
    x,
    y=None,
    *,
    batch_size: int = 32,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = 0.98,
    diverge: float = 4.0,
    schedule=None,
    stages: Sequence[int] | None = None,
    backbone=None,
    blocks=None,
    seed: int = 0,
    verbose: int = 0,
) -> LRFinderResult:
    """Run the learning-rate range test on a compiled model; the model is left exactly as it
    was.

    Args:
        model: a compiled Keras model (its optimizer's class and settings are used, on a fresh
            copy).
        x, y: the training data: arrays (``y`` required; shuffled batches of ``batch_size``,
            drawn with ``seed``), or a ``tf.data.Dataset``, ``keras.utils.PyDataset`` or any
            iterable of ``(x, y)`` batches (``y=None``), repeated when exhausted.
        batch_size: the batch size for arrays. Defaults to 32.
        start_lr, end_lr: the range of learning rates, tried exponentially spaced. Default
            1e-7 to 10, as fastai.
        steps: the number of steps (and learning rates). Defaults to 100.
        beta: the smoothing factor of the loss. Defaults to 0.98.
        diverge: stop when the smoothed loss exceeds this many times its best. Defaults to 4.
        schedule: a :class:`~keras_tlft.ProgressiveUnfreeze` schedule (anything the callback
            accepts): one test per stage, with that stage's ``trainable`` flags. ``None``: one
            test of the model as it is (named ``"head"`` when its backbone is frozen, else
            ``"model"``).
        stages: with ``schedule``, the indices of the stages to test (default: all).
        backbone, blocks: where the backbone and its blocks are, as for ProgressiveUnfreeze.
        seed: the seed of the batch order.
        verbose: 1 prints one line per test.

    Returns:
        An :class:`LRFinderResult`: per test, the learning rates, raw and smoothed losses and
        the suggestions (``result.suggestions``), ``to_json()`` and ``plot(path)``.

    Example:

    ```python
    model = keras_tlft.build_model("mobilenet_v2", num_classes=10)
    model.compile("adam", "sparse_categorical_crossentropy")
    result = keras_tlft.lr_find(model, x, y, schedule="gradual", steps=200)
    result.suggestions    # {"head": 0.0021, "stage 1": 0.00035, ...}
    result.plot("lr_find.png")
    ```
    """
    _check_arguments(model, start_lr, end_lr, steps, beta, diverge, batch_size)
    if y is not None:
        from keras_tlft.training.batching import check_arrays

        rows = check_arrays(model, x, y)
        if rows is not None:
            _warn_few_samples(rows, steps, batch_size)
    check_input_range(model, first_inputs(x, batch_size), "lr_find")
    plans = _plans(model, schedule, stages, backbone, blocks)
    lrs = start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(steps - 1, 1))
    batches = _batch_stream(x, y, batch_size, seed)
    saved = _Snapshot(model)
    original, train_function = model.optimizer, model.train_function
    tests = []
    try:
        for plan in plans:
            saved.restore()
            with _trainable_as(plan, model) as trainable_params:
                unfreeze = None if plan.unfreeze is None else str(plan.unfreeze)
                test = RangeTest(plan.name, plan.stage, unfreeze, plan.blocks, trainable_params)
                _run(model, original, test, lrs, batches, beta, diverge)
            test.steepest, test.minimum_tenth = suggest(test.learning_rates, test.smoothed,
                                                        steps)
            tests.append(test)
            if verbose:
                print(f"lr_find {test.name}: {len(test.losses)} steps"
                      f"{' (diverged)' if test.diverged else ''}, steepest {test.steepest}, "
                      f"minimum/10 {test.minimum_tenth}")
    finally:
        model.optimizer = original
        model.train_function = train_function
        saved.restore()
    return LRFinderResult(tests, float(start_lr), float(end_lr), steps, beta, diverge,
                          batch_size if y is not None else None)


# At most this many passes over the samples in one range test: beyond it the loss keeps falling
# as the model memorises them, and the suggestion drifts high (benchmarks/transfer_matrix.py,
# EfficientNet-Lite0 on Fashion-MNIST with Adam, 100 steps of 32: minimum/10 0.13 with 100
# samples, 32 passes, where fine-tuning at it ended at chance; 0.0095 with 1,000, 3.2 passes).
MAX_PASSES = 4


def _warn_few_samples(n: int, steps: int, batch_size: int) -> None:
    passes = steps * batch_size / max(n, 1)
    if passes > MAX_PASSES:
        warnings.warn(
            f"lr_find: {steps} steps of {batch_size} pass over the {n} samples {passes:.0f} "
            f"times, so the loss keeps falling as the model memorises them and the suggested "
            f"learning rate comes out too high. Expected at most {MAX_PASSES} passes: more "
            f"samples, or steps <= {MAX_PASSES * n // batch_size}, or a smaller batch_size.",
            stacklevel=3)


def _run(model, original, test, lrs, batches, beta, diverge) -> None:
    optimizer = _fresh_optimizer(original, float(lrs[0]))
    model.optimizer = optimizer
    optimizer.build(model.trainable_variables)
    model.make_train_function(force=True)
    best = math.inf
    avg = 0.0
    for i, lr in enumerate(lrs, start=1):
        optimizer.learning_rate = float(lr)
        bx, by = next(batches)
        model.reset_metrics()
        loss = float(np.asarray(model.train_on_batch(bx, by, return_dict=True)["loss"]))
        avg = beta * avg + (1 - beta) * loss
        smoothed = avg / (1 - beta**i)
        test.learning_rates.append(float(lr))
        test.losses.append(loss)
        test.smoothed.append(smoothed)
        best = min(best, smoothed)
        if not math.isfinite(smoothed) or smoothed > diverge * best:
            test.diverged = True
            break


def _check_arguments(model, start_lr, end_lr, steps, beta, diverge, batch_size) -> None:
    if getattr(model, "optimizer", None) is None:
        raise ValueError("lr_find needs a compiled model: call model.compile(optimizer, loss) "
                         "first. Received: model.optimizer=None")
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not _positive_number(value):
            raise ValueError(f"{name} must be a number > 0. Received: {name}={value!r}")
    if end_lr <= start_lr:
        raise ValueError("end_lr must be larger than start_lr: the test raises the learning rate "
                         f"from one to the other. Received: start_lr={start_lr!r}, "
                         f"end_lr={end_lr!r}")
    for name, value, low in (("steps", steps, 2), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}. Received: {name}={value!r}")
    if not (_positive_number(beta) and beta < 1) and beta != 0:
        raise ValueError(f"beta must be a number in [0, 1), the loss's smoothing factor. "
                         f"Received: beta={beta!r}")
    if not (_positive_number(diverge) and diverge > 1):
        raise ValueError("diverge must be a number > 1: the test stops when the smoothed loss "
                         f"exceeds `diverge` times its best. Received: diverge={diverge!r}")


def _positive_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _fresh_optimizer(optimizer, learning_rate: float):
    """A new optimizer of ``optimizer``'s class and settings, with a settable float learning
    rate (also inside a LossScaleOptimizer)."""
    config = optimizer.get_config()
    _set_learning_rate(config, learning_rate)
    try:
        return type(optimizer).from_config(config)
    except Exception as exc:  # a custom optimizer without a faithful config
        raise ValueError(
            f"lr_find trains with a fresh copy of the model's optimizer, made from its config, "
            f"and {type(optimizer).__name__}.from_config failed: {exc}. Compile the model with "
            f"an optimizer whose get_config/from_config round-trip. "
            f"Received: optimizer={type(optimizer).__name__}"
        ) from exc


def _set_learning_rate(config: dict, learning_rate: float) -> None:
    inner = config.get("inner_optimizer")
    if isinstance(inner, dict):
        _set_learning_rate(inner.get("config", inner), learning_rate)
    else:
        config["learning_rate"] = learning_rate


class _Snapshot:
    """Every variable of a model (weights, non-trainable state, metrics, seeds), copied, and put
    back bit for bit by :meth:`restore`."""

    def __init__(self, model):
        import keras

        seen: set[int] = set()
        self.variables = [v for v in [*model.variables, *model.metrics_variables]
                          if not (id(v) in seen or seen.add(id(v)))]
        self.values = [np.array(keras.ops.convert_to_numpy(v)) for v in self.variables]

    def restore(self) -> None:
        for v, value in zip(self.variables, self.values):
            v.assign(value)


# ---------------------------------------------------------------------- what each test trains


@dataclass
class _Plan:
    """One test to run: its name, and the unfreeze state it applies (``None``: the model as it
    is)."""

    name: str
    stage: int | None = None
    unfreeze: Any = None
    blocks: list[str] = field(default_factory=list)
    backbone: Any = None  # a discovery.Backbone, with unfreeze
    bn: str = "frozen"


@contextlib.contextmanager
def _trainable_as(plan: _Plan, model):
    """Apply ``plan``'s unfreeze state; yields the model's trainable parameter count; every flag
    is put back on leaving."""
    from keras_tlft.model.blocks import apply_unfreeze, count_weights, trainable_flags_restored

    if plan.backbone is None:
        yield count_weights(model.trainable_weights)
        return
    bb = plan.backbone
    with trainable_flags_restored(bb.layers, bb.container):
        apply_unfreeze(bb.layers, bb.blocks, plan.unfreeze, plan.bn, bb.container)
        yield count_weights(model.trainable_weights)


def _plans(model, schedule, stages, backbone, blocks) -> list[_Plan]:
    from keras_tlft.model.blocks import unfrozen_layer_indices
    from keras_tlft.model.discovery import blocks_argument, locate_backbone
    from keras_tlft.schedules.schedule_input import parse_schedule

    if schedule is None:
        if stages is not None:
            raise ValueError("stages selects stages of a schedule: pass schedule= too. "
                             f"Received: schedule=None, stages={stages!r}")
        return [_Plan(_name_as_is(model, backbone))]
    parsed = parse_schedule(schedule)
    bb = locate_backbone(model, backbone, blocks_argument(blocks))
    resolved = parsed.resolve(len(bb.blocks))
    chosen = range(len(resolved)) if stages is None else stages
    bad = [s for s in chosen if isinstance(s, bool) or not isinstance(s, int)
           or not 0 <= s < len(resolved)]
    if bad:
        raise ValueError(f"stages must be stage indices from 0 to {len(resolved) - 1} (this "
                         f"schedule has {len(resolved)} stages). Received: stages={stages!r}")
    plans = []
    for index in chosen:
        state = resolved[index].unfreeze
        unfrozen = unfrozen_layer_indices(bb.layers, bb.blocks, state)
        names = [b.name for b in bb.blocks if any(i in unfrozen for i in b.indices())]
        plans.append(_Plan("head" if not names else f"stage {index}", index, state, names, bb,
                           parsed.bn))
    return plans


def _name_as_is(model, backbone) -> str:
    """``"head"`` when the model has a backbone and none of it trains, else ``"model"``."""
    from keras_tlft.model.discovery import find_backbone

    try:
        _, layers, container = find_backbone(model, backbone)
    except ValueError:
        return "model"
    roots = [container] if container is not None else layers
    return "model" if any(root.trainable_weights for root in roots) else "head"


def _batch_stream(x, y, batch_size: int, seed: int) -> Iterator[tuple]:
    """An endless stream of ``(x, y)`` batches as numpy arrays."""
    import keras

    if y is not None:
        n = len(keras.tree.flatten(x)[0])
        if n == 0:
            raise ValueError("lr_find needs training data: x is empty. Received: len(x)=0")
        rng = np.random.default_rng(seed)

        def arrays():
            while True:
                order = rng.permutation(n)
                for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
                    index = order[start : start + batch_size]
                    yield (keras.tree.map_structure(lambda a, i=index: np.asarray(a)[i], x),
                           np.asarray(y)[index])

        return arrays()
    if isinstance(x, keras.utils.PyDataset):
        def pydataset():
            while True:
                for i in range(len(x)):
                    yield _as_pair(x[i])

        return pydataset()
    if not hasattr(x, "__iter__"):
        raise ValueError("x must be arrays (with y), a tf.data.Dataset, a keras.utils.PyDataset "
                         f"or an iterable of (x, y) batches. Received: x={type(x).__name__}")

    def iterable():
        while True:
            empty = True
            for batch in x:
                empty = False
                yield _as_pair(batch)
            if empty:
                raise ValueError("lr_find needs training data: the dataset yielded no batch. "
                                 f"Received: x={type(x).__name__}")

    return iterable()


def _as_pair(batch) -> tuple:
    import keras

    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError("lr_find needs (x, y) batches from a dataset. "
                         f"Received: a batch of type {type(batch).__name__}")
    return tuple(keras.tree.map_structure(np.asarray, batch[:2]))

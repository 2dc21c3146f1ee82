"""Tracing the next stage's train step ahead, in a thread, while the current stage trains
(TensorFlow): what it would save at a stage change, and what it costs the steps around it.

MobileNetV2 (96x96, ``weights=None``, head ``gap,dropout:0.2,dense:10:softmax``, Adam 1e-4,
batch 16, one batch repeated) trains with its backbone frozen; the next stage unfreezes it all
(BatchNorm kept frozen, as ``bn="frozen"`` does). Each variant builds a fresh model:

- ``retrace``: what a stage change does today, split into the trace (the function traced for
  the new flags) and the first call's excess over a step (grappler's optimisation and the
  kernels' creation);
- ``thread``: a second thread traces the new step while the main thread goes on with frozen
  steps; the stage change then pays only the first call. The frozen steps taken meanwhile are
  timed against the frozen steps before;
- ``thread+call``: the same, and the thread also calls the new step once on an exhausted
  iterator, which makes TensorFlow instantiate it and then stop at ``IteratorGetNext``. The
  step is Keras's ``train_step`` with every op it creates made to wait for the batch
  (``tf.control_dependencies``), so that the call changes no variable.

A last check, with nothing else running, lists the variables that a call on an exhausted
iterator changes, for Keras's step as it is and for the step made to wait for the batch: in
the first, the ops that do not need the batch (the optimizer's iteration count, the metrics'
counts, the dropout seed) run anyway (see ``docs/benchmarks/end-to-end.md``).

The thread sets the ``trainable`` flags of the next stage while it traces, which is safe here
only because nothing else reads them; this is a measurement, not a design. It calls Keras's
private ``Trainer._make_function`` (Keras 3 TensorFlow trainer).

    python benchmarks/trace_ahead.py                   # 2 repeats, interleaved, best of each
    python benchmarks/trace_ahead.py --threads 1       # one compute thread: steadier steps

Writes ``benchmarks/results/trace_ahead.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

VARIANTS = ("retrace", "thread", "thread+call")


def setup(batch: int):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_tlft import build_model

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 10, input_shape=(96, 96, 3), weights=None,
                        head="gap,dropout:0.2,dense:10:softmax")
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, 96, 96, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    data = tf.data.Dataset.from_tensors((x, y))
    backbone = model.get_layer("backbone")

    def unfreeze(on: bool) -> None:
        backbone.trainable = on
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False

    unfreeze(True)
    model.optimizer.build(model.trainable_variables)  # as ProgressiveUnfreeze builds it
    unfreeze(False)
    return model, data, unfreeze


def traced(function):
    """The ``tf.function`` inside the step function Keras's ``_make_function`` returns."""
    return next(c.cell_contents for c in function.__closure__
                if hasattr(c.cell_contents, "get_concrete_function"))


def timed_steps(function, iterator, n: int) -> list[float]:
    import tensorflow as tf

    times = []
    for _ in range(n):
        start = time.perf_counter()
        tf.nest.flatten(function(iterator))[0].numpy()
        times.append(time.perf_counter() - start)
    return times


def batch_gated(step):
    """``step`` with every op it creates made to wait for the batch: on an exhausted iterator
    none of them runs."""
    import tensorflow as tf

    def gated(data):
        with tf.control_dependencies(tf.nest.flatten(data)):
            return step(data)

    return gated


def exhausted_call(function, data) -> None:
    """Call ``function`` on an iterator with nothing left: TensorFlow instantiates it, then
    stops at the first ``IteratorGetNext``."""
    import tensorflow as tf

    try:
        function(iter(data.take(0)))
    except (StopIteration, tf.errors.OutOfRangeError):
        return
    raise AssertionError("a step ran on an exhausted iterator")


def run(variant: str, steps: int, batch: int) -> dict:
    model, data, unfreeze = setup(batch)
    iterator = iter(data.repeat())
    frozen = model._make_function(model.train_step)
    timed_steps(frozen, iterator, 3)
    before = statistics.median(timed_steps(frozen, iterator, steps))
    result = {"frozen_step_ms": before * 1e3}
    if variant == "retrace":
        unfreeze(True)
        step = model._make_function(model.train_step)
        start = time.perf_counter()
        traced(step).get_concrete_function(iterator)
        result["trace_seconds"] = time.perf_counter() - start
    else:
        box: dict = {}

        def ahead():
            start = time.perf_counter()
            unfreeze(True)
            step_function = (batch_gated(model.train_step) if variant == "thread+call"
                             else model.train_step)
            box["step"] = model._make_function(step_function)
            traced(box["step"]).get_concrete_function(iterator)
            unfreeze(False)
            if variant == "thread+call":
                exhausted_call(box["step"], data)
            box["seconds"] = time.perf_counter() - start

        thread = threading.Thread(target=ahead)
        thread.start()
        during: list[float] = []
        while thread.is_alive():
            during += timed_steps(frozen, iterator, 1)
        thread.join()
        step = box["step"]
        unfreeze(True)
        result.update({
            "ahead_seconds": box["seconds"], "steps_meanwhile": len(during),
            "step_meanwhile_ms": statistics.median(during) * 1e3 if during else 0.0,
            "steps_slowed_by_seconds": sum(during) - len(during) * before,
        })
    start = time.perf_counter()
    timed_steps(step, iterator, 1)
    first = time.perf_counter() - start
    steady = statistics.median(timed_steps(step, iterator, steps))
    result.update({"stage_step_ms": steady * 1e3, "first_call_excess_seconds": first - steady})
    result["change_seconds"] = result.get("trace_seconds", 0.0) + first - steady
    return result


def side_effects(batch: int, gated: bool) -> list[str]:
    """The variables one call of a traced step on an exhausted iterator changes."""
    import numpy as np

    model, data, unfreeze = setup(batch)
    unfreeze(True)
    step_function = batch_gated(model.train_step) if gated else model.train_step
    step = model._make_function(step_function)
    timed_steps(step, iter(data.repeat()), 1)  # traced and instantiated; now a second one
    step = model._make_function(step_function)
    traced(step).get_concrete_function(iter(data.repeat()))
    variables = (model.variables + model.optimizer.variables
                 + [v for metric in model.metrics for v in metric.variables])
    before = [np.array(v.numpy()) for v in variables]
    exhausted_call(step, data)
    return sorted({v.path for v, b in zip(variables, before)
                   if not np.array_equal(b, v.numpy())})


def gated_trains_alike(batch: int, steps: int = 3) -> float:
    """The largest difference between the weights after ``steps`` steps of Keras's step and of
    the step made to wait for the batch, from the same start (0.0: bit for bit)."""
    import numpy as np

    weights = []
    for gated in (False, True):
        model, data, unfreeze = setup(batch)
        unfreeze(True)
        step = model._make_function(batch_gated(model.train_step) if gated
                                    else model.train_step)
        timed_steps(step, iter(data.repeat()), steps)
        weights.append([np.array(v.numpy()) for v in model.weights])
    return max(float(np.max(np.abs(a - b))) for a, b in zip(*weights))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per stage")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="compute threads (0: TensorFlow's default)")
    parser.add_argument("--out", default="trace_ahead.json")
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    runs: dict[str, list] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            runs[variant].append(run(variant, args.steps, args.batch_size))
            print(variant, {k: round(v, 3) for k, v in runs[variant][-1].items()},
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    best = {v: {k: min(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    for variant, b in best.items():
        moved = (f"   meanwhile {b['steps_meanwhile']} frozen steps at "
                 f"{b['step_meanwhile_ms']:.0f} ms (+{b['steps_slowed_by_seconds']:.2f} s)"
                 if "ahead_seconds" in b else f"   trace {b['trace_seconds']:.2f} s")
        print(f"{variant:<12} change {b['change_seconds']:.2f} s   frozen step "
              f"{b['frozen_step_ms']:.0f} ms{moved}")
    changed = {name: side_effects(args.batch_size, gated=name == "gated")
               for name in ("keras", "gated")}
    for name, paths in changed.items():
        print(f"an exhausted-iterator call of the {name} step changed:",
              ", ".join(paths) or "nothing")
    difference = gated_trains_alike(args.batch_size)
    print(f"weights after 3 steps, Keras's step against the gated one: largest difference "
          f"{difference:g}")
    write_json(args.out, {"benchmark": "trace_ahead", "environment": environment(),
                          "settings": vars(args), "runs": runs, "best": best,
                          "exhausted_call_changed": changed,
                          "gated_weight_difference": difference})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

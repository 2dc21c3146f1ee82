"""What ProgressiveUnfreeze costs: per-step overhead, retraces and stage-change time.

In one process, on one MobileNetV2-sized model (keras.applications.MobileNetV2, weights=None,
96x96) and the same data:

1. plain Keras: the backbone frozen, `fit`; then trainable (BatchNorm frozen, as the callback
   leaves it), recompiled, `fit` again: what a user writes without the callback;
2. the same model from the same weights, frozen, recompiled, and one `fit` with
   `ProgressiveUnfreeze({0: "none", E: "all"})` and every learning-rate feature on
   (backbone_lr_ratio, block_lr_decay, warm-up): the in-graph cost of per-block learning rates
   is included.

Prints per stage the steady-state median step time of both and the overhead, the number of
traces of the train step (TensorFlow, JAX; PyTorch runs eagerly), the wall time of each stage
change (the callback's own work and the first, retracing, step) and the callback's set-up,
then writes benchmarks/results/callback_cost.json (one entry per backend).

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/callback_cost.py
    KERAS_BACKEND=jax python benchmarks/callback_cost.py --epochs-per-stage 4 --steps 10

Step times are each epoch's median step, and the best epoch of a stage: on a shared machine,
other processes only ever add time.
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
sys.path.insert(0, str(Path(__file__).parent))

RESULT = "callback_cost.json"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch")
    parser.add_argument("--epochs-per-stage", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of both runs; the best of each is kept")
    parser.add_argument("--threads", type=int, default=0,
                        help="compute threads (0: the backend's default); 1 gives the steadiest "
                             "figures on a shared machine")
    parser.add_argument("--no-trace-backbone-once", dest="trace_backbone_once",
                        action="store_false",
                        help="the callback with trace_backbone_once=False: every retrace walks "
                             "the backbone's layers again, as keras-tlft 0.2 did (TensorFlow)")
    parser.add_argument("--no-compile-ahead", dest="compile_ahead", action="store_false",
                        help="the callback with compile_ahead=False: the stage's step compiles "
                             "at its first step, as keras-tlft 0.2 did (JAX)")
    parser.add_argument("--no-fused-adam", dest="fused_adam", action="store_false",
                        help="the callback with Keras's own Adam update (about 40 ops a "
                             "variable) instead of one ResourceApplyAdam op a variable "
                             "(TensorFlow), as keras-tlft 0.2 did")
    parser.add_argument("--no-lr-rules", dest="lr_rules", action="store_false",
                        help="run the callback without per-block learning rates and warm-up, "
                             "to separate their cost from the stage mechanics'")
    args = parser.parse_args()
    if args.epochs_per_stage < 2 or args.steps < 3:
        parser.error("--epochs-per-stage must be >= 2 and --steps >= 3 (steady state)")
    return args


def limit_threads(n: int) -> None:
    """Before the backend starts: n compute threads."""
    if not n:
        return
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                               f"=false intra_op_parallelism_threads={n}").strip()
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)


def step_clock():
    import keras

    class StepClock(keras.callbacks.Callback):
        """Wall and CPU time between consecutive batch ends, per epoch: a whole loop iteration
        (right under JAX's asynchronous dispatch too, which blocks on the previous step's
        donated state)."""

        def __init__(self):
            super().__init__()
            self.epochs: list[list[float]] = []
            self.cpu: list[list[float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append([])
            self.cpu.append([])
            self.last = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter(), time.process_time()
            self.epochs[-1].append(now[0] - self.last[0])
            self.cpu[-1].append(now[1] - self.last[1])
            self.last = now

    return StepClock()


def steady_median(epochs: list[list[float]]) -> float:
    """Steady-state step time: the median step of each epoch but the first (it compiles), each
    epoch's first step left out; the best epoch is kept, since other processes on the machine
    can only add time."""
    return min(statistics.median(times[1:]) for times in epochs[1:])


def steady(clock, first: int = 0, last: int | None = None) -> dict:
    return {"median_step_s": steady_median(clock.epochs[first:last]),
            "median_step_cpu_s": steady_median(clock.cpu[first:last]),
            "first_epoch_s": sum(clock.epochs[first])}


def build(size: int):
    import keras

    base = keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(size, size, 3))
    base = keras.Model(base.input, base.output, name="backbone")
    inputs = keras.Input((size, size, 3))
    x = base(inputs, training=False)
    head = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)],
                            name="head")
    return keras.Model(inputs, head(x)), base


def count_traces(model) -> list:
    """Count calls of the Python train step: on TensorFlow and JAX, one per (re)trace."""
    traces: list = []
    train_step = type(model).train_step

    def counting(*args):
        traces.append(time.perf_counter())
        return train_step(model, *args)

    model.train_step = counting
    return traces


def compile_fresh(model):
    import keras

    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def plain_keras(model, base, x, y, batch_size, epochs):
    """Frozen fit, then (recompiled) fit with the backbone trainable but its BatchNorm."""
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.blocks import apply_unfreeze, cut_into_blocks

    blocks = cut_into_blocks(base.layers, get_backbone("mobilenet_v2").blocks)
    result = {}
    traces = count_traces(model)
    for stage, state in (("frozen", "none"), ("full", "all")):
        apply_unfreeze(base.layers, blocks, state, container=base)
        compile_fresh(model)
        clock = step_clock()
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False,
                  callbacks=[clock])
        result[stage] = {**steady(clock), "fit_s": time.perf_counter() - start}
    result["traces"] = len(traces)
    return result


def with_callback(model, base, x, y, batch_size, epochs, steps, lr_rules=True,
                  trace_backbone_once=True, compile_ahead=True):
    from keras_tlft import ProgressiveUnfreeze

    base.trainable = False
    compile_fresh(model)
    traces = count_traces(model)
    rules = dict(backbone_lr_ratio=0.1, block_lr_decay=1 / 2.6, warmup_steps=steps)
    cb = ProgressiveUnfreeze({0: "none", epochs: "all"}, blocks="mobilenet_v2",
                             stage_change="retrace", trace_backbone_once=trace_backbone_once,
                             compile_ahead=compile_ahead,
                             **(rules if lr_rules else {}))
    timings = {"set_model": [], "on_epoch_begin": [], "on_epoch_end": []}
    for hook in timings:
        original = getattr(cb, hook)

        def timed(*args, _original=original, _hook=hook, **kwargs):
            start = time.perf_counter()
            out = _original(*args, **kwargs)
            timings[_hook].append(time.perf_counter() - start)
            return out

        setattr(cb, hook, timed)
    clock = step_clock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=2 * epochs, verbose=0, shuffle=False,
              callbacks=[cb, clock])
    fit_s = time.perf_counter() - start
    full = clock.epochs[epochs:]
    change = {
        "callback_s": timings["on_epoch_begin"][epochs],
        "first_step_s": full[0][0],
        "steady_step_s": steady_median(full),
    }
    change["total_s"] = change["callback_s"] + change["first_step_s"] - change["steady_step_s"]
    # compile_ahead: the next stage's trace, run in fit's thread during the stage before
    change["traced_ahead_s"] = cb._ahead.seconds if cb._ahead is not None else 0.0
    per_epoch_python = statistics.median(
        b + e for b, e in zip(timings["on_epoch_begin"][1:epochs], timings["on_epoch_end"][1:]))
    return {
        "frozen": steady(clock, 0, epochs),
        "full": steady(clock, epochs),
        "traces": len(traces),
        "stage_changes": 1,
        "set_up_s": timings["set_model"][0],
        "stage_change": change,
        "callback_python_per_epoch_s": per_epoch_python,
        "fit_s": fit_s,
    }


def main() -> None:
    args = parse_args()
    limit_threads(args.threads)
    import keras
    import numpy as np
    from _common import environment, keras_adam_update

    if not args.fused_adam:
        keras_adam_update()

    load_before = os.getloadavg()[0]
    keras.utils.set_random_seed(0)
    model, base = build(args.image_size)
    start_weights = model.get_weights()
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.uniform(0, 1, (n, args.image_size, args.image_size, 3)).astype("float32")
    y = rng.integers(0, 10, n)

    plains, ourses = [], []
    for _ in range(args.repeats):  # interleaved, so that both see the same machine
        model.set_weights(start_weights)
        plains.append(plain_keras(model, base, x, y, args.batch_size, args.epochs_per_stage))
        model.set_weights(start_weights)
        ourses.append(with_callback(model, base, x, y, args.batch_size, args.epochs_per_stage,
                                    args.steps, args.lr_rules, args.trace_backbone_once,
                                    args.compile_ahead))
    plain, ours = best_of(plains), best_of(ourses)
    rules = update_cost(model, args.steps)
    rules["share_of_full_step"] = rules["rules_cost_s"] / plain["full"]["median_step_s"]
    traced = keras.backend.backend() != "torch"
    doc = {
        "environment": environment(),
        "model": f"MobileNetV2 (weights=None, include_top=False) {args.image_size}x"
                 f"{args.image_size} + GAP + Dense(10)",
        "params": model.count_params(),
        "batch_size": args.batch_size,
        "steps_per_epoch": args.steps,
        "epochs_per_stage": args.epochs_per_stage,
        "repeats": args.repeats,
        "plain": plain,
        "callback": ours,
        "threads": args.threads or "default",
        "lr_rules": args.lr_rules,
        "trace_backbone_once": args.trace_backbone_once,
        "compile_ahead": args.compile_ahead,
        "fused_adam": args.fused_adam,
        "overhead": {s: ours[s]["median_step_s"] / plain[s]["median_step_s"] - 1
                     for s in ("frozen", "full")},
        "overhead_cpu": {s: ours[s]["median_step_cpu_s"] / plain[s]["median_step_cpu_s"] - 1
                         for s in ("frozen", "full")},
        "learning_rate_rules": rules,
        "retraces_per_stage_change": (ours["traces"][0] - 1) / ours["stage_changes"]
        if traced else None,
        "load_average": [load_before, os.getloadavg()[0]],
    }
    print_table(doc, traced)
    merge_json(doc)


def update_cost(model, steps: int, calls: int = 40) -> dict:
    """The only per-step work the callback adds is in the optimizer's update (the learning-rate
    rules): time that update alone for the unfrozen model, with every block's rule (block decay
    and warm-up) and with none, alternately; best of 5 rounds of ``calls`` updates each."""
    import keras

    from keras_tlft.callbacks.optim import LearningRateRule, StagedOptimizer

    backend = keras.backend.backend()
    variables = list(model.trainable_variables)
    grads = [keras.ops.full(v.shape, 1e-3, dtype=v.dtype) for v in variables]
    model.compile(keras.optimizers.Adam(1e-4), "mse")
    staged = StagedOptimizer.install(model)
    staged.build(variables)
    groups = [variables[i::20] for i in range(20)]
    with_rules = [(g, LearningRateRule(scale=0.1 / 2.6**i, warmup_start=0, warmup_steps=steps))
                  for i, g in enumerate(groups)]
    optimizer = model.optimizer

    def make_update():
        if backend == "tensorflow":
            import tensorflow as tf

            update = tf.function(lambda: optimizer.apply(grads, variables))
            return lambda: update()
        if backend == "jax":
            import jax

            update = jax.jit(lambda ov, tv: optimizer.stateless_apply(ov, grads, tv))
            state = [[v.value for v in optimizer.variables], [v.value for v in variables]]

            def run():
                tv, ov = update(state[0], state[1])
                state[:] = [ov, tv]
                jax.block_until_ready(tv)

            return run
        import torch

        def run():
            with torch.no_grad():
                optimizer.apply(grads, variables)

        return run

    updates = {}
    for name, rules in (("none", []), ("rules", with_rules)):
        staged.set_rules(rules)
        updates[name] = make_update()
        updates[name]()  # trace and compile
    best = {name: float("inf") for name in updates}
    for _ in range(5):
        for name, update in updates.items():
            start = time.perf_counter()
            for _ in range(calls):
                update()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {"update_s": best["none"], "update_with_rules_s": best["rules"],
            "rules_cost_s": best["rules"] - best["none"]}


def best_of(runs: list[dict]) -> dict:
    """Each stage's fastest steady state over the repeats; the rest from the median repeat."""
    best = dict(runs[0])
    for stage in ("frozen", "full"):
        best[stage] = {key: min(r[stage][key] for r in runs) for key in runs[0][stage]}
    if "stage_change" in best:
        best["stage_change"] = {key: statistics.median(r["stage_change"][key] for r in runs)
                                for key in runs[0]["stage_change"]}
        for key in ("set_up_s", "callback_python_per_epoch_s", "fit_s"):
            best[key] = statistics.median(r[key] for r in runs)
    best["traces"] = [r["traces"] for r in runs]
    return best


def print_table(doc: dict, traced: bool) -> None:
    env, plain, ours = doc["environment"], doc["plain"], doc["callback"]
    print(f"\nProgressiveUnfreeze cost: {doc['model']}, batch {doc['batch_size']}, "
          f"{env['backend']} on {env['device']} ({env['cpus']} CPUs, load average "
          f"{doc['load_average'][0]:.1f} -> {doc['load_average'][1]:.1f})")
    rules = "on" if doc["lr_rules"] else "off (--no-lr-rules)"
    once = "" if doc.get("trace_backbone_once", True) else "; trace_backbone_once=False"
    once += "" if doc.get("compile_ahead", True) else "; compile_ahead=False"
    once += "" if doc.get("fused_adam", True) else "; Keras's own Adam update"
    print(f"threads: {doc['threads']}; per-block learning rates and warm-up: {rules}{once}; "
          f"steady state: the best of {doc['repeats']} interleaved repeats")
    print(f"{'stage':<8}{'plain step ms':>15}{'callback step ms':>18}{'overhead':>10}"
          f"{'CPU ms plain':>14}{'CPU ms callback':>17}{'overhead':>10}")
    for stage in ("frozen", "full"):
        p, c = plain[stage]["median_step_s"] * 1e3, ours[stage]["median_step_s"] * 1e3
        pc, cc = plain[stage]["median_step_cpu_s"] * 1e3, ours[stage]["median_step_cpu_s"] * 1e3
        print(f"{stage:<8}{p:>15.1f}{c:>18.1f}{doc['overhead'][stage]:>+10.1%}"
              f"{pc:>14.1f}{cc:>17.1f}{doc['overhead_cpu'][stage]:>+10.1%}")
    rules = doc["learning_rate_rules"]
    print(f"per-block learning rates: the optimizer update takes {rules['update_s'] * 1e3:.2f} "
          f"ms without rules, {rules['update_with_rules_s'] * 1e3:.2f} ms with 20 block rules "
          f"and warm-up: {rules['rules_cost_s'] * 1e3:+.2f} ms a step = "
          f"{rules['share_of_full_step']:+.2%} of a plain full-stage step")
    change = ours["stage_change"]
    traces = (f"{ours['traces'][0]} (plain Keras, recompiled: {plain['traces'][0]}); "
              f"{doc['retraces_per_stage_change']:.0f} per stage change") if traced \
        else "n/a (PyTorch runs eagerly)"
    print(f"train-step traces      {traces}")
    print(f"stage change           {change['total_s']:.2f} s = callback "
          f"{change['callback_s'] * 1e3:.0f} ms + first step {change['first_step_s']:.2f} s "
          f"- a steady step {change['steady_step_s']:.2f} s")
    if change.get("traced_ahead_s"):
        print(f"traced ahead           {change['traced_ahead_s']:.2f} s in fit's thread, during "
              "the stage before (moved there, not saved)")
    print(f"fit                    {ours['fit_s']:.1f} s with the callback (median repeat); "
          f"plain Keras's two fits {plain['frozen']['fit_s'] + plain['full']['fit_s']:.1f} s "
          "(each the fastest repeat)")
    print(f"set-up (set_model)     {ours['set_up_s'] * 1e3:.0f} ms (optimizer built for every "
          f"variable the schedule can unfreeze)")
    print(f"callback per epoch     {ours['callback_python_per_epoch_s'] * 1e3:.1f} ms of Python "
          f"(logs, stage check)")


def merge_json(doc: dict) -> None:
    from _common import RESULTS, write_json

    path = RESULTS / RESULT
    results = {}
    if path.exists():
        try:
            results = json.loads(path.read_text())
        except json.JSONDecodeError:
            results = {}
    key = doc["environment"]["backend"] + ("" if doc["threads"] == "default"
                                           else f"_threads{doc['threads']}")
    key += "" if doc["lr_rules"] else "_no_lr_rules"
    key += "" if doc.get("trace_backbone_once", True) else "_each"
    key += "" if doc.get("compile_ahead", True) else "_no_ahead"
    key += "" if doc.get("fused_adam", True) else "_keras_adam"
    results[key] = doc
    write_json(RESULT, results)


if __name__ == "__main__":
    main()

"""Figures for ProgressiveUnfreeze beyond one process: optimizer memory and time per step.

``memory``: what the union design costs. ProgressiveUnfreeze builds the optimizer once, for every
variable the schedule can unfreeze; the alternative builds it per stage, for what trains in the
stage. Measured on keras-hub's ViT-B/16 at 224 (weights=None, 86M parameters) with a Dense head
and Adam, for a gradual schedule from the top (stage 0: the head; stage k: the head, the final
norm and the top k transformer layers; the last stage: everything): the bytes of the optimizer's
variables, counted on optimizers really built (``optimizer.build``), union against each stage.

``steps``: time per step of the same staged training in one process (one CPU device) and in two
processes (JAX DataParallel, one CPU device each, loopback coordinator, gloo collectives), with
the same global batch; in each process plain Keras (whole model trainable, no callback) is timed
first, so every ratio is against plain Keras in the same process.

Usage:
    python benchmarks/distributed.py memory
    python benchmarks/distributed.py steps [--epochs 4 --samples 512 --global-batch 64]

Writes benchmarks/results/distributed.json (each section replaces its own entry). CPU only: on
this machine both "devices" share the same cores, so two processes cannot be faster than one;
the figure is the overhead of the collectives and of the second process, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

RESULT = "distributed.json"
MiB = 1024 * 1024


# ---------------------------------------------------------------------- memory

def _nbytes(variables) -> int:
    import numpy as np

    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def _optimizer_bytes(variables) -> int:
    """Bytes of an Adam really built for ``variables`` (its slots; the iteration count and the
    learning rate are a few bytes)."""
    import keras

    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(list(variables))
    size = _nbytes(optimizer.variables)
    del optimizer
    return size


def vit_stages():
    """ViT-B/16 with a head, and the variables each stage of a top-down gradual schedule trains."""
    import keras
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3), patch_size=(16, 16), num_layers=12, num_heads=12,
        hidden_dim=768, mlp_dim=3072, name="backbone")
    inputs = keras.Input((224, 224, 3))
    tokens = backbone(inputs)
    outputs = keras.layers.Dense(1000, name="head")(tokens[:, 0])
    model = keras.Model(inputs, outputs)
    head = model.get_layer("head").trainable_variables
    layers = [[v for v in backbone.weights if f"transformer_block_{i}/" in v.path]
              for i in range(1, 13)]
    if not all(layers):  # keras-hub names them otherwise: fail rather than measure nonsense
        raise RuntimeError("No ViT transformer layer variables found by path: "
                           f"{[v.path for v in backbone.weights][:8]}")
    in_layers = {id(v) for group in layers for v in group}
    final_norm = [v for v in backbone.weights
                  if id(v) not in in_layers and v.path.startswith("vit_encoder/")]
    stages = [head]
    for k in range(1, 13):
        stages.append(head + final_norm + [v for group in layers[12 - k:] for v in group])
    stages.append(head + list(backbone.weights))
    return model, stages


def memory() -> dict:
    model, stages = vit_stages()
    union = {id(v): v for stage in stages for v in stage}
    union_bytes = _optimizer_bytes(union.values())
    per_stage = [_optimizer_bytes(stage) for stage in stages]
    params = _nbytes(model.weights)
    print(f"ViT-B/16 224 + Dense(1000): {params / MiB:,.0f} MiB of weights, "
          f"{len(stages)} stages, Adam")
    print(f"{'stage':>5} {'trains (MiB)':>13} {'per-stage opt (MiB)':>20} {'union opt (MiB)':>16}")
    for i, (stage, size) in enumerate(zip(stages, per_stage)):
        print(f"{i:>5} {_nbytes(stage) / MiB:>13,.1f} {size / MiB:>20,.1f} "
              f"{union_bytes / MiB:>16,.1f}")
    mean = statistics.fmean(per_stage)
    print(f"peak: per-stage {max(per_stage) / MiB:,.1f} MiB, union {union_bytes / MiB:,.1f} MiB "
          f"(ratio {union_bytes / max(per_stage):.3f}); mean over stages (one epoch each): "
          f"per-stage {mean / MiB:,.1f} MiB, union {union_bytes / MiB:,.1f} MiB "
          f"(ratio {union_bytes / mean:.2f})")
    return {
        "model": "keras_hub ViTBackbone ViT-B/16 224 (weights=None) + Dense(1000)",
        "optimizer": "Adam", "weights_bytes": params, "union_bytes": union_bytes,
        "per_stage_bytes": per_stage,
        "stage_trainable_bytes": [_nbytes(s) for s in stages],
        "union_over_peak": union_bytes / max(per_stage), "union_over_mean": union_bytes / mean,
    }


# ---------------------------------------------------------------------- steps

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _epoch_step_seconds(model, fit_kwargs, callbacks, epochs, steps) -> list[float]:
    import keras

    seconds: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # logs are fetched: the epoch's work is done
            seconds.append((time.perf_counter() - self.t) / steps)

    model.fit(**fit_kwargs, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[*callbacks, Clock()])
    return seconds


def worker(args) -> None:
    """One process of the ``steps`` figure; prints one JSON line."""
    import numpy as np

    if args.num_processes > 1:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        keras.distribution.initialize(f"127.0.0.1:{args.port}", args.num_processes,
                                      args.process_id)
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False))
    import keras

    from keras_tlft import ProgressiveUnfreeze

    def build(trainable):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((32, 32, 3))
        x = inputs
        for i, filters in enumerate((32, 64, 64)):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    name=f"block{i + 1}_conv")(x)
        base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="backbone")
        base.trainable = trainable
        outer = keras.Input((32, 32, 3))
        head = keras.Sequential([keras.layers.Dense(10, name="dense")], name="head")
        model = keras.Model(outer, head(base(outer)))
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return model

    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.samples)
    local = args.global_batch // args.num_processes
    rows = np.arange(args.samples).reshape(-1, args.global_batch)
    rows = rows[:, args.process_id * local:(args.process_id + 1) * local].ravel()
    fit_kwargs = {"x": x[rows], "y": y[rows], "batch_size": local}
    steps = args.samples // args.global_batch
    plain = _epoch_step_seconds(build(True), fit_kwargs, [], args.epochs, steps)
    staged = _epoch_step_seconds(build(False), fit_kwargs,
                                 [ProgressiveUnfreeze({0: "none", 1: "all"},
                                                      backbone_lr_ratio=0.1)],
                                 args.epochs + 1, steps)
    # Steady state: the first epoch of a fit, and of a stage, includes tracing and compiling.
    print(json.dumps({"process": args.process_id, "plain": min(plain[1:]),
                      "staged": min(staged[2:]), "plain_epochs": plain,
                      "staged_epochs": staged}))


def _launch(args, num_processes) -> list[dict]:
    port = str(_free_port())
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    common = ["--samples", str(args.samples), "--global-batch", str(args.global_batch),
              "--epochs", str(args.epochs), "--num-processes", str(num_processes),
              "--port", port]
    procs = [subprocess.Popen([sys.executable, __file__, "worker", *common, "--process-id",
                               str(i)], env=env, stdout=subprocess.PIPE, text=True)
             for i in range(num_processes)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=args.timeout)
        if proc.returncode:
            raise SystemExit(f"a worker exited {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def steps(args) -> dict:
    one = _launch(args, 1)[0]
    two = _launch(args, 2)
    two_plain = max(r["plain"] for r in two)
    two_staged = max(r["staged"] for r in two)
    print(f"JAX, CPU ({os.cpu_count()} cores shared by both processes), global batch "
          f"{args.global_batch}, best epoch's mean step, ms:")
    print(f"{'':>22} {'plain Keras':>12} {'ProgressiveUnfreeze':>20} {'ratio':>6}")
    print(f"{'1 process, 1 device':>22} {one['plain'] * 1e3:>12.1f} {one['staged'] * 1e3:>20.1f} "
          f"{one['staged'] / one['plain']:>6.2f}")
    print(f"{'2 processes, 1 each':>22} {two_plain * 1e3:>12.1f} {two_staged * 1e3:>20.1f} "
          f"{two_staged / two_plain:>6.2f}")
    print(f"two processes / one: plain {two_plain / one['plain']:.2f}, "
          f"ProgressiveUnfreeze {two_staged / one['staged']:.2f}")
    return {"global_batch": args.global_batch, "samples": args.samples,
            "one_process": one, "two_processes": two,
            "staged_over_plain": {"one": one["staged"] / one["plain"],
                                  "two": two_staged / two_plain},
            "two_over_one": {"plain": two_plain / one["plain"],
                             "staged": two_staged / one["staged"]}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("memory", "steps", "worker"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what == "worker":
        worker(args)
        return
    from _common import RESULTS, environment, write_json

    section = memory() if args.what == "memory" else steps(args)
    path = RESULTS / RESULT
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[args.what] = {**section, "environment": environment(),
                      "load_average": os.getloadavg()}
    write_json(RESULT, doc)


if __name__ == "__main__":
    main()

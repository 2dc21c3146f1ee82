"""ProgressiveUnfreeze under keras.distribution.DataParallel across processes (JAX, CPU).

    # two processes on this machine, one CPU device each, loopback coordinator:
    KERAS_BACKEND=jax python jax_multiprocess.py --port 12345 --process-id 0 --out p0.npz &
    KERAS_BACKEND=jax python jax_multiprocess.py --port 12345 --process-id 1 --out p1.npz
    # the same global batch in one process, one device:
    KERAS_BACKEND=jax python jax_multiprocess.py --num-processes 1 --out single.npz

With ``--input tfdata`` (the default) every process passes the same global ``tf.data.Dataset``
(batched by the global batch) and Keras shards it; with ``--input numpy`` each process passes its
own rows of every global batch and ``auto_shard_dataset=False``. Either way Keras assembles each
global batch with ``jax.make_array_from_process_local_data``. A 3-stage schedule with
per-block learning rates and warm-up; each process writes (atomically) an ``.npz`` with its final
weights and a JSON summary of what moved in each epoch, the stage logs and the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from helpers_distributed.files import save_npz  # noqa: E402

GLOBAL_BATCH = 8
N_SAMPLES = 32
EPOCHS = 3
SCHEDULE = {0: "none", 1: 1, 2: "all"}
OPTIONS = {"backbone_lr_ratio": 0.5, "block_lr_decay": 0.5, "warmup_steps": 2}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-processes", type=int, default=2)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True, help="where to write this process's .npz")
    parser.add_argument("--input", choices=("tfdata", "numpy"), default="tfdata",
                        help="tfdata: the global tf.data.Dataset, sharded by Keras (its default, "
                             "auto_shard_dataset=True); numpy: this process's rows, with "
                             "auto_shard_dataset=False")
    parser.add_argument("--plain", action="store_true",
                        help="train without ProgressiveUnfreeze (the backbone stays frozen)")
    return parser.parse_args(argv)


def initialize(args) -> None:
    """Join the cluster (before any JAX computation): Keras's own entry point, which calls
    ``jax.distributed.initialize`` with the coordinator's address."""
    if args.num_processes == 1:
        return
    import jax

    # CPU collectives between processes (gloo is the default of recent jax; set it explicitly
    # so that an older default, "none", fails here rather than hanging in the first step).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    keras.distribution.initialize(job_addresses=f"127.0.0.1:{args.port}",
                                  num_processes=args.num_processes, process_id=args.process_id)


def local_rows(args) -> np.ndarray:
    """This process's rows of every global batch, in order (all of them for one process)."""
    per_process = GLOBAL_BATCH // args.num_processes
    rows = np.arange(N_SAMPLES).reshape(-1, GLOBAL_BATCH)
    return rows[:, args.process_id * per_process:(args.process_id + 1) * per_process].ravel()


def start_weights(model) -> list:
    rng = np.random.default_rng(0)
    start = [rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()]
    start[5] = np.abs(start[5]) + 0.5  # BatchNorm's moving variance
    return start




def main(argv=None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    initialize(args)
    init_seconds = time.perf_counter() - t0
    import jax
    import keras
    from helpers_unfreeze.tiny import data, nested_model, values

    from keras_tlft import ProgressiveUnfreeze

    devices = keras.distribution.list_devices()
    if args.num_processes > 1:
        distribution = keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=args.input == "tfdata")
        keras.distribution.set_distribution(distribution)
    model = nested_model()
    model.set_weights(start_weights(model))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(N_SAMPLES)
    if args.input == "tfdata":
        import tensorflow as tf

        rows = np.arange(N_SAMPLES)
        fit_data = {"x": tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)}
    else:
        rows = local_rows(args)
        fit_data = {"x": x[rows], "y": y[rows], "batch_size": GLOBAL_BATCH // args.num_processes}
    moved, epoch_seconds = [], []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.before = values(self.model.get_layer("backbone").weights)
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self.t)
            after = values(self.model.get_layer("backbone").weights)
            moved.append(sorted(k for k in after if not np.array_equal(after[k],
                                                                       self.before[k])))

    callbacks = [Watch()] if args.plain else [ProgressiveUnfreeze(SCHEDULE, **OPTIONS), Watch()]
    t_fit = time.perf_counter()
    history = model.fit(**fit_data, epochs=EPOCHS, shuffle=False, verbose=0,
                        callbacks=callbacks)
    fit_seconds = time.perf_counter() - t_fit
    summary = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": [str(d) for d in devices],
        "local_devices": [str(d) for d in jax.local_devices()],
        "input": args.input,
        "rows": rows.tolist(),
        "moved": moved,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "init_seconds": init_seconds,
        "fit_seconds": fit_seconds,
        "epoch_seconds": epoch_seconds,
        "steps_per_epoch": N_SAMPLES // GLOBAL_BATCH,
        "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "total_seconds": time.perf_counter() - t0,
    }
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    save_npz(args.out, {**weights, "summary": np.array(json.dumps(summary))})


if __name__ == "__main__":
    main()

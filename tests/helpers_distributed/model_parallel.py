"""ProgressiveUnfreeze under keras.distribution.ModelParallel (JAX), on two CPU devices.

    KERAS_BACKEND=jax python model_parallel.py --out result.json
    # the same mesh across two processes, one CPU device each:
    python model_parallel.py --num-processes 2 --process-id 0 --port P --out p0.json &
    python model_parallel.py --num-processes 2 --process-id 1 --port P --out p1.json

A LayoutMap shards every conv kernel of the tiny backbone (and the head's kernel) on their output
channels across a ("batch", "model") = (1, 2) mesh. The same model is trained once on one device
without a distribution (the reference), then under ModelParallel with a 3-stage schedule, then
again with a second schedule whose union is larger (the optimizer is rebuilt, keeping its state).
At the start and end of every epoch it records, for each kernel and each optimizer slot of one, the
sharding's partition spec, the shape of the shard on each device and a checksum of the value, plus
the identity of the optimizer's variable list; writes a JSON summary (atomically) to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from helpers_distributed.files import write_json  # noqa: E402

FIRST = {0: "none", 1: 1, 2: "all"}
OPTIONS = {"backbone_lr_ratio": 0.5, "block_lr_decay": 0.5, "warmup_steps": 2}
SECOND_FIRST = {0: "none", 1: 1}   # union: head + block3
SECOND_THEN = {0: 1, 1: "all"}     # union: head + every block -> the optimizer is rebuilt


def layout_map(mesh):
    import keras

    layouts = keras.distribution.LayoutMap(mesh)
    layouts[r"block\d_conv/kernel"] = (None, None, None, "model")
    layouts[r".*dense/kernel"] = (None, "model")
    return layouts


def describe(variable) -> dict:
    value = variable.value
    return {"spec": str(value.sharding.spec) if hasattr(value.sharding, "spec") else None,
            "shape": list(value.shape),
            "shards": sorted({tuple(s.data.shape) for s in value.addressable_shards}),
            # This process's part (the whole value in one process): fetching all of it is not
            # possible when the array spans other processes' devices.
            "sum": sum(float(np.asarray(s.data, dtype="float64").sum())
                       for s in value.addressable_shards if s.replica_id == 0)}


def snapshot(model) -> dict:
    optimizer = model.optimizer
    sharded = {v.path: describe(v) for v in model.weights if "kernel" in v.path}
    slots = {v.path: describe(v) for v in optimizer.variables if "kernel" in v.path}
    return {"model": sharded, "optimizer": slots,
            "optimizer_ids": [id(v) for v in optimizer.variables],
            "trainable": sorted(v.path for v in model.trainable_variables)}


def train(model, schedule, epochs, x, y, log):
    import keras

    from keras_tlft import ProgressiveUnfreeze

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            log.append({"epoch": epoch, "when": "begin", **snapshot(self.model)})

        def on_epoch_end(self, epoch, logs=None):
            log.append({"epoch": epoch, "when": "end", **snapshot(self.model)})

    history = model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                        callbacks=[ProgressiveUnfreeze(schedule, **OPTIONS), Watch()])
    return history.history


def fresh_model(start):
    import keras
    from helpers_unfreeze.tiny import nested_model

    model = nested_model()
    model.set_weights(start)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model




def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-processes", type=int, default=1,
                        help="2: one CPU device per process, the mesh spans both processes")
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    # Two devices in all (read when the backend starts, below).
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={2 // args.num_processes}")
    if args.num_processes > 1:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        import keras

        keras.distribution.initialize(f"127.0.0.1:{args.port}", args.num_processes,
                                      args.process_id)
    import keras
    from helpers_unfreeze.tiny import data, nested_model

    rng = np.random.default_rng(0)
    start = [rng.normal(0, 0.3, w.shape).astype("float32") for w in nested_model().get_weights()]
    start[5] = np.abs(start[5]) + 0.5  # BatchNorm's moving variance
    x, y = data(32)

    ref_weights = None
    if args.num_processes == 1:  # the reference: the same training on one device
        reference = fresh_model(start)
        train(reference, FIRST, 3, x, y, [])
        ref_weights = reference.get_weights()

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"), devices)
    keras.distribution.set_distribution(keras.distribution.ModelParallel(
        layout_map=layout_map(mesh), batch_dim_name="batch",
        auto_shard_dataset=False))  # every process passes the whole (replicated) batch
    model = fresh_model(start)
    first_log: list = []
    history = train(model, FIRST, 3, x, y, first_log)
    diff = None if ref_weights is None else max(
        float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), ref_weights))

    second = fresh_model(start)
    second_log: list = []
    train(second, SECOND_FIRST, 2, x, y, second_log)
    train(second, SECOND_THEN, 2, x, y, second_log)
    write_json(args.out, {"devices": [str(d) for d in devices], "history": history,
                          "max_weight_diff": diff, "first": first_log, "second": second_log})


if __name__ == "__main__":
    main()

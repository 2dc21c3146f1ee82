"""Staged fine-tuning under a distribution, compared with one device, in its own process.

    KERAS_BACKEND=tensorflow python distributed_run.py   # tf.distribute.MirroredStrategy
    KERAS_BACKEND=jax python distributed_run.py          # keras.distribution.DataParallel

Two logical CPU devices are made before the backend starts. The same model (same start
weights) is trained with ProgressiveUnfreeze once on one device and once on both; prints a JSON
summary: which backbone weights moved in each stage and how far the two runs' final weights are.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def logical_devices():
    if BACKEND == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return [d.name for d in tf.config.list_logical_devices("CPU")]
    import jax

    return [str(d) for d in jax.devices("cpu")]


def train(start, scope, x, y):
    import keras

    from helpers_unfreeze.tiny import nested_model, values
    from keras_tlft import ProgressiveUnfreeze

    with scope():
        model = nested_model()
        model.set_weights(start)
        model.compile(keras.optimizers.Adam(1e-2), "mse")
    moved = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.before = values(self.model.get_layer("backbone").weights)

        def on_epoch_end(self, epoch, logs=None):
            after = values(self.model.get_layer("backbone").weights)
            moved.append(sorted(k for k in after
                                if "moving" not in k and not np.array_equal(after[k],
                                                                            self.before[k])))

    cb = ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}, backbone_lr_ratio=0.5,
                             block_lr_decay=0.5, warmup_steps=2)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                        callbacks=[cb, Watch()])
    return model, moved, history.history


def main() -> None:
    import contextlib

    devices = logical_devices()
    import keras

    from helpers_unfreeze.tiny import data, nested_model

    rng = np.random.default_rng(0)
    start = [rng.normal(0, 0.3, w.shape).astype("float32") for w in nested_model().get_weights()]
    start[5] = np.abs(start[5]) + 0.5  # BatchNorm's moving variance
    x, y = data(32)

    _, single_moved, _ = single = train(start, contextlib.nullcontext, x, y)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices)
        scope, replicas = strategy.scope, strategy.num_replicas_in_sync
    else:
        distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        keras.distribution.set_distribution(distribution)
        scope, replicas = contextlib.nullcontext, len(distribution.device_mesh.devices)
    model, moved, history = train(start, scope, x, y)
    diff = max(float(np.abs(a - b).max())
               for a, b in zip(model.get_weights(), single[0].get_weights()))
    print(json.dumps({"devices": devices, "replicas": replicas, "moved": moved,
                      "single_moved": single_moved, "max_weight_diff": diff,
                      "unfreeze_stage": history["unfreeze_stage"]}))


if __name__ == "__main__":
    main()

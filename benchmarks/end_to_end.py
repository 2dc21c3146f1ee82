"""End to end, as a user feels it: keras-tlft's ``fine_tune`` against the hand-written recipe.

Three comparisons, each in this process, the same data and seeds, wall time from the first
``fit`` to the last epoch (model building excluded), validation accuracy at the end:

1. ``fine_tune_at``: the TensorFlow transfer-learning tutorial's shape (seed-002): MobileNetV2,
   head ``gap,dropout:0.2,dense:1:sigmoid``, E frozen epochs then E epochs with
   ``fine_tune_at=100``, images as arrays, no augmentation. keras-tlft: one
   ``fine_tune(schedule="fine_tune_at:layer=100,epoch=E")`` (the frozen epochs on cached
   backbone features, the fine-tuning stage on the cached outputs of its 100 frozen layers).
   Hand-written: the tutorial's two ``fit`` calls (``base_model(x, training=False)``, recompiled
   with RMSprop at a tenth of the rate for the second).
2. The same with the tutorial's augmentation (random flip and rotation before the backbone):
   caching cannot apply, both run ``model.fit`` throughout.
3. ``gradual:every=2`` on EfficientNet-Lite0 against the all-unfrozen-at-once recipe (E frozen
   epochs, then the whole backbone in a second ``fit``), the same number of epochs.

Offline: ``weights=None`` (random backbones, whose BatchNorm statistics are set from one batch
so that their features carry the images; the times do not depend on the weights), and the
images are Fashion-MNIST's T-shirt/top against Trouser (from ``keras.datasets``, resized and
made RGB), so that accuracy means something. The seed's shape (160x160, thousands of images,
10 + 10 epochs) is the default; ``--quick`` and the options scale it down for a CPU: say what
you ran.

    python benchmarks/end_to_end.py                  # 160x160, 2000 + 500 images, 10 + 10 epochs
    python benchmarks/end_to_end.py --quick          # 96x96, 256 + 64 images, 2 + 2 epochs
    python benchmarks/end_to_end.py --size 96 --train 512 --val 128 --epochs 4

Writes ``benchmarks/results/end_to_end.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, write_json  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import _keras_compat as compat  # noqa: E402

HEAD = "gap,dropout:0.2,dense:1:sigmoid"
# The tutorial's base_learning_rate is 1e-4 for pretrained features; random ones (weights=None,
# offline) need more steps or a larger rate to separate the classes in a few epochs.
LR = 1e-3
SEED = 2


def images(n_train, n_val, size):
    """T-shirt/top (0) against Trouser (1), resized to ``size`` and RGB, 0-255 floats."""
    (x, y), _ = keras.datasets.fashion_mnist.load_data()
    keep = np.flatnonzero(y < 2)[: n_train + n_val]
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x[keep][..., None], (size, size)))
    x = np.repeat(x, 3, axis=-1).astype("float32")
    y = y[keep].astype("float32")
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


class WallClock(keras.callbacks.Callback):
    """The time of the last epoch end, across every part of a run."""

    def on_epoch_end(self, epoch, logs=None):
        self.end = time.perf_counter()


def calibrate_batchnorm(model, x):
    """Random backbones' activations vanish (MobileNetV2's features are ~1e-12 with
    ``weights=None``): set every BatchNorm's moving statistics to those of one batch, layer by
    layer (momentum 0, one forward pass in training mode), so that the features carry the
    images, as pretrained weights would; then every flag is put back."""
    layers = compat.sublayers(model)
    saved = [(layer, layer.trainable) for layer in layers]
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [norm.momentum for norm in norms]
    for layer in layers:
        layer.trainable = True
    for norm in norms:
        norm.momentum = 0.0
    model(x[:128], training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    for layer, trainable in saved:  # parents first: a parent's setter sets its children
        layer.trainable = trainable


def compile_binary(model, optimizer):
    model.compile(optimizer, "binary_crossentropy", metrics=["accuracy"])


def tlft_run(backbone, size, data, schedule, epochs, augment):
    keras.utils.set_random_seed(SEED)
    model = tlft.build_model(backbone, head=HEAD, input_shape=(size, size, 3), weights=None,
                             augmentation="default" if augment else None)
    (x, y), val = data
    calibrate_batchnorm(model, x)
    compile_binary(model, keras.optimizers.Adam(LR))
    clock = WallClock()
    start = time.perf_counter()
    history = tlft.fine_tune(model, x, y, epochs=epochs, schedule=schedule, batch_size=32,
                             validation_data=val, callbacks=[clock], verbose=0)
    return clock.end - start, history.history["val_accuracy"][-1]


def hand_run(backbone, size, data, frozen_epochs, epochs, fine_tune_at, augment):
    """The tutorial's recipe, written out: freeze, fit, unfreeze from ``fine_tune_at``,
    recompile at a tenth of the rate, fit again."""
    keras.utils.set_random_seed(SEED)
    spec = tlft.get_backbone(backbone)
    base = spec.builder((size, size, 3), None, False)
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = inputs
    if augment:
        x = keras.layers.RandomFlip("horizontal")(x)
        x = keras.layers.RandomRotation(0.2)(x)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    (x_train, y_train), val = data
    calibrate_batchnorm(model, x_train)
    compile_binary(model, keras.optimizers.Adam(LR))
    clock = WallClock()
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=frozen_epochs, batch_size=32, validation_data=val,
              callbacks=[clock], verbose=0)
    base.trainable = True
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False
    compile_binary(model, keras.optimizers.RMSprop(LR / 10))
    history = model.fit(x_train, y_train, epochs=epochs, initial_epoch=frozen_epochs,
                        batch_size=32, validation_data=val, callbacks=[clock], verbose=0)
    return clock.end - start, history.history["val_accuracy"][-1]


def warm_up(size):
    """One tiny fit, so that the first comparison does not pay the runtime's start-up."""
    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Conv2D(2, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    compile_binary(model, "adam")
    model.fit(np.zeros((4, size, size, 3)), np.zeros(4), epochs=1, verbose=0)
    keras.backend.clear_session()


def compare(name, tlft_args, hand_args, rows):
    hand_s, hand_acc = hand_run(*hand_args)
    keras.backend.clear_session()
    tlft_s, tlft_acc = tlft_run(*tlft_args)
    keras.backend.clear_session()
    row = {"comparison": name, "hand_seconds": hand_s, "tlft_seconds": tlft_s,
           "ratio": tlft_s / hand_s, "hand_val_accuracy": hand_acc,
           "tlft_val_accuracy": tlft_acc, "load_average": os.getloadavg()}
    rows.append(row)
    print(f"{name:<34} hand-written {hand_s:7.1f} s acc {hand_acc:.3f}   keras-tlft "
          f"{tlft_s:7.1f} s acc {tlft_acc:.3f}   ratio {row['ratio']:.2f}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="96x96, 256 + 64 images, 2 + 2 epochs")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10,
                        help="frozen epochs, and as many fine-tuning epochs")
    parser.add_argument("--only", default="fine_tune_at,augmented,gradual",
                        help="comma-separated: fine_tune_at, augmented, gradual")
    parser.add_argument("--out", default="end_to_end.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.train, args.val, args.epochs = 96, 256, 64, 2
    data = images(args.train, args.val, args.size)
    warm_up(args.size)
    e, rows = args.epochs, []
    only = args.only.split(",")
    # The fine-tuning stage at a tenth of the rate, as the tutorial's second compile.
    cut = f"fine_tune_at:layer=100,epoch={e},learning_rate={LR / 10}"
    for augment in (False, True):
        name = "augmented" if augment else "fine_tune_at"
        if name in only:
            compare(f"{name} (mobilenet_v2)",
                    ("mobilenet_v2", args.size, data, cut, 2 * e, augment),
                    ("mobilenet_v2", args.size, data, e, 2 * e, 100, augment), rows)
    if "gradual" in only:
        compare("gradual (efficientnet_lite0)",
                ("efficientnet_lite0", args.size, data, f"gradual:every=2,backbone_lr={LR / 10}",
                 2 * e, False),
                ("efficientnet_lite0", args.size, data, 2, 2 * e, 0, False), rows)
    write_json(args.out, {"benchmark": "end_to_end", "environment": environment(),
                          "settings": vars(args), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

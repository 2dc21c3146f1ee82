"""Tiny models for the ProgressiveUnfreeze tests: a nested functional "backbone" with three
blocks (one with BatchNorm) and a Sequential "head", plus the flat variant."""

from __future__ import annotations

import numpy as np

SHAPE = (8, 8, 3)


def backbone(name="backbone"):
    import keras

    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Activation("relu", name="block1_relu")(x)
    x = keras.layers.Conv2D(4, 3, name="block2_conv")(x)
    x = keras.layers.Conv2D(4, 1, name="block3_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="block3_pool")(x)
    return keras.Model(inputs, x, name=name)


def nested_model(seed=0, backbone_name="backbone", n_out=2):
    """``Model(image) -> backbone -> head``, backbone frozen, as build_model builds it (no
    ``training=False`` on the backbone's call, whose meaning differs between Keras versions)."""
    import keras

    keras.utils.set_random_seed(seed)
    base = backbone(backbone_name)
    base.trainable = False
    inputs = keras.Input(SHAPE)
    x = base(inputs)
    outputs = keras.Sequential([keras.layers.Dense(n_out, name="dense")], name="head")(x)
    return keras.Model(inputs, outputs, name="tiny")


def flat_model(seed=0):
    """``Model(base.input, head(base.output))``: the backbone's layers sit in the model."""
    import keras

    keras.utils.set_random_seed(seed)
    base = backbone("base")
    for layer in base.layers[:-1]:
        layer.trainable = False
    outputs = keras.layers.Dense(2, name="head_dense")(base.output)
    return keras.Model(base.input, outputs, name="flat"), base


def data(n=32, seed=0, n_out=2):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *SHAPE)).astype("float32")
    y = rng.random((n, n_out)).astype("float32")
    return x, y


def values(variables) -> dict:
    import keras

    return {v.path: np.array(keras.ops.convert_to_numpy(v)) for v in variables}


def moved(before: dict, after: dict) -> dict:
    return {k: not np.array_equal(before[k], after[k]) for k in before}


def vgg_like_model(backbone_name="vgg16", seed=0):
    """A nested backbone laid out (and named) as VGG16: block1_conv1 ... block5_pool."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = inputs
    for b in range(1, 6):
        x = keras.layers.Conv2D(2, 1, name=f"block{b}_conv1")(x)
        x = keras.layers.MaxPooling2D(1, name=f"block{b}_pool")(x)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name=backbone_name)
    base.trainable = False
    outer = keras.Input(SHAPE)
    head = keras.Sequential([keras.layers.Dense(2)], name="head")
    return keras.Model(outer, head(base(outer)))


def tiny_spec():
    """A throwaway BackboneSpec of the tiny backbone, with block rules, for build_model."""
    from keras_tlft.registry import BackboneSpec, BlockRule

    def builder(input_shape, weights, include_top):
        return backbone("tiny_backbone")

    return BackboneSpec(
        name="tiny", builder=builder, source="tests", default_input_shape=SHAPE,
        min_input_size=8, preprocessing="none",
        blocks=(BlockRule("stem", "^input"), BlockRule("middle", "^block2_"),
                BlockRule("top", "^block3_")),
    )

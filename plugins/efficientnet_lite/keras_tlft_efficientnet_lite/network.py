"""EfficientNet-Lite0 in Keras 3, layer for layer as the reference network computes it.

EfficientNet-Lite (Tan & Le; tensorflow/tpu ``efficientnet/lite``) is EfficientNet-B0 made for
mobile accelerators: no squeeze-and-excite, ReLU6 instead of swish, and the stem (32 filters)
and head (1280) kept fixed. The stages below are Lite0's (width and depth multipliers 1.0).
Blocks of expansion ratio 1 have no expansion convolution. (keras-cv 0.9's EfficientNetLite B0
builds the same 49 convolution kernels, but it is an optional, TensorFlow-bound dependency whose
names and built-in rescaling differ; this network needs Keras only.)

Padding is TensorFlow's ``"same"`` (for a stride of 2 on an even input, the extra row and
column go after), which is what the reference PyTorch port's static same-padding convolutions
reproduce, and BatchNorm's epsilon is 1e-3 as in the reference.

Layer names follow ``keras.applications.EfficientNet``: ``stem_*``, ``block{stage}{letter}_*``
(``block3a_`` starts stage 3), ``top_*``; with ``include_top`` also ``avg_pool``,
``top_dropout`` and ``predictions`` (logits: the reference's ``_fc`` has no softmax).
"""

from __future__ import annotations

import string
from typing import NamedTuple

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROPOUT = 0.2
CLASSES = 1000


class Stage(NamedTuple):
    """One stage of MBConv blocks; the first block has ``stride``, the others 1."""

    kernel: int
    repeats: int
    filters_in: int
    filters_out: int
    expand_ratio: int
    stride: int


STAGES: tuple[Stage, ...] = (
    Stage(3, 1, 32, 16, 1, 1),
    Stage(3, 2, 16, 24, 6, 2),
    Stage(5, 2, 24, 40, 6, 2),
    Stage(3, 3, 40, 80, 6, 2),
    Stage(5, 3, 80, 112, 6, 1),
    Stage(5, 4, 112, 192, 6, 2),
    Stage(3, 1, 192, 320, 6, 1),
)


def block_prefixes() -> list[tuple[str, Stage, int]]:
    """``(prefix, stage, index in stage)`` of every block, in order: ``block1a_`` first."""
    return [
        (f"block{s}{string.ascii_lowercase[i]}_", stage, i)
        for s, stage in enumerate(STAGES, start=1)
        for i in range(stage.repeats)
    ]


def efficientnet_lite0(input_shape=(224, 224, 3), include_top=False, name="efficientnet_lite0"):
    """The EfficientNet-Lite0 network (random weights) as a functional ``keras.Model``.

    Its input is already preprocessed (see the plugin's preprocessing layer); with
    ``include_top`` its output is the 1000 ImageNet logits, else the last feature map
    (``top_activation``, 1280 channels).
    """
    import keras
    from keras import layers

    def bn(x, layer_name):
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=layer_name)(x)

    def relu6(x, layer_name):
        return layers.ReLU(max_value=6.0, name=layer_name)(x)

    inputs = keras.Input(shape=tuple(input_shape), name="input_layer")
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      name="stem_conv")(inputs)
    x = relu6(bn(x, "stem_bn"), "stem_activation")
    for prefix, stage, i in block_prefixes():
        filters_in = stage.filters_in if i == 0 else stage.filters_out
        stride = stage.stride if i == 0 else 1
        shortcut = x
        expanded = filters_in * stage.expand_ratio
        if stage.expand_ratio != 1:
            x = layers.Conv2D(expanded, 1, padding="same", use_bias=False,
                              name=prefix + "expand_conv")(x)
            x = relu6(bn(x, prefix + "expand_bn"), prefix + "expand_activation")
        x = layers.DepthwiseConv2D(stage.kernel, strides=stride, padding="same", use_bias=False,
                                   name=prefix + "dwconv")(x)
        x = relu6(bn(x, prefix + "bn"), prefix + "activation")
        x = layers.Conv2D(stage.filters_out, 1, padding="same", use_bias=False,
                          name=prefix + "project_conv")(x)
        x = bn(x, prefix + "project_bn")
        if stride == 1 and filters_in == stage.filters_out:
            x = layers.Add(name=prefix + "add")([x, shortcut])
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = relu6(bn(x, "top_bn"), "top_activation")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(DROPOUT, name="top_dropout")(x)
        x = layers.Dense(CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=name)

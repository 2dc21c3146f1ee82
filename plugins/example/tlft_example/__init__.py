"""An example keras-tlft backbone plugin: one tiny convolutional backbone with three blocks.

Importing this module imports no Keras: the spec is plain data, and :func:`build_tiny_convnet`
imports Keras only when keras-tlft builds the backbone.
"""

from __future__ import annotations

from keras_tlft import BackboneSpec, BlockRule, hookimpl

__version__ = "0.1.0"
KERAS_TLFT_PLUGIN_API = 1  # the keras-tlft plugin API this plugin is written for


def build_tiny_convnet(input_shape=(32, 32, 3), weights=None, include_top=False):
    """A three-block convolutional backbone, 19,344 parameters.

    Args:
        input_shape: ``(height, width, channels)``.
        weights: ``None`` (random initialization) or the path of a weights file saved from this
            architecture; the example has no pretrained weights to download.
        include_top: ``True`` adds a 10-class classifier.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate((32, 48), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{i}_pool")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="tiny_convnet")
    if weights is not None:
        model.load_weights(weights)
    return model


TINY_CONVNET = BackboneSpec(
    name="tiny_convnet",
    builder=build_tiny_convnet,
    source="example",
    family="convnet",
    description="A tiny three-block convnet (the keras-tlft plugin example)",
    aliases=("example_convnet",),
    default_input_shape=(32, 32, 3),
    min_input_size=8,
    params=19_344,
    preprocessing="rescale",
    weights=(),
    blocks=(
        BlockRule("stem", "^stem_"),
        BlockRule("block1", "^block1_"),
        BlockRule("block2", "^block2_"),
    ),
)

SPECS = (TINY_CONVNET,)


@hookimpl
def register_backbones(register):
    """Register the example's backbone."""
    for spec in SPECS:
        register(spec)

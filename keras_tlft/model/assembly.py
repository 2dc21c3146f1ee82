"""build_model: preprocessing, resizing, augmentation, backbone and head in one Keras model."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence

from keras_tlft.backbones.preset_backbones import (
    WeightsDownloadError,
    application_download_error,
    is_download_failure,
    is_weights_file,
    looks_like_download_failure,
    preset_download_error,
)
from keras_tlft.backbones.registry import get_backbone
from keras_tlft.backbones.spec import BACKBONE_LAYER, HEAD_LAYER, SPEC_ATTRIBUTE, BackboneSpec
from keras_tlft.checks import check_regular_file, received
from keras_tlft.model.batchnorm import BN_ATTRIBUTE, bn_policy, set_backbone_inference
from keras_tlft.model.heads import build_head, resolve_head
from keras_tlft.model.input_range import INPUT_RANGE_ATTRIBUTE

# Re-exported where keras-tlft 0.1 defined them; plugins use keras_tlft.preset_backbones.
__all__ = [
    "BACKBONE_LAYER",
    "HEAD_LAYER",
    "MAX_CHANNELS",
    "MAX_SIDE",
    "SPEC_ATTRIBUTE",
    "WeightsDownloadError",
    "backbone_input_shape",
    "build_model",
    "check_weights",
    "default_augmentation",
    "is_download_failure",
    "is_weights_file",
    "load_backbone",
    "parse_input_shape",
    "preset_download_error",
]


# The largest input build_model accepts: beyond these a model does not fit in any memory, and
# such a number is a typo (refused before anything is built, not after seconds of building).
MAX_SIDE = 16_384
MAX_CHANNELS = 1_024


def parse_input_shape(shape, name: str = "input_shape") -> tuple[int, int, int]:
    """``(H, W, C)`` from a tuple or a ``"H,W,C"`` / ``"HxW"`` string; C defaults to 3."""
    if isinstance(shape, str):
        parts = [p for p in re.split(r"[,x\s]+", shape.strip()) if p]
        if not all(p.isdigit() for p in parts):
            parts = None
        shape = tuple(int(p) for p in parts) if parts else shape
    if isinstance(shape, (tuple, list)) and len(shape) == 2:
        shape = (*shape, 3)
    ok = (
        isinstance(shape, (tuple, list))
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    )
    if not ok:
        raise ValueError(
            f"Invalid {name}: expected (height, width, channels) as positive integers, "
            f"e.g. (224, 224, 3) or '224,224,3'. Received: {name}={shape!r}"
        )
    if max(shape[:2]) > MAX_SIDE or shape[2] > MAX_CHANNELS:
        raise ValueError(
            f"Invalid {name}: expected at most {MAX_SIDE:,} pixels a side and {MAX_CHANNELS:,} "
            f"channels (one {MAX_SIDE:,}x{MAX_SIDE:,}x3 image is 3 GiB as float32, before any "
            f"activation); tile or resize the images. Received: {name}={shape!r}"
        )
    return tuple(shape)


def load_backbone(spec: BackboneSpec, input_shape, weights="imagenet", include_top=False):
    """Build the backbone of ``spec``; a failed download raises :class:`WeightsDownloadError`.

    ``weights="default"`` means the spec's first pretrained weights (``"imagenet"`` for
    keras.applications, the file's own for a local ``.keras`` backbone), or none if it has none.
    """
    if weights == "default":
        weights = spec.weights[0] if spec.weights else None
    is_file = check_weights(spec, weights)
    try:
        return spec.build(input_shape=input_shape, weights=weights, include_top=include_top)
    except Exception as exc:
        if weights is not None and not is_file and looks_like_download_failure(exc):
            raise application_download_error(spec.key, weights, exc) from exc
        if is_file and isinstance(exc, (OSError, ValueError, KeyError, zipfile.BadZipFile)):
            raise ValueError(
                f"{spec.key} could not load the weights file {weights!r}: "
                f"{type(exc).__name__}: {exc}. Expected weights saved from the same "
                f"architecture (model.save_weights). Received: weights={weights!r}"
            ) from exc
        raise


# The files Keras's load_weights reads, and how each begins (a zip archive, an HDF5 file).
WEIGHTS_SUFFIXES = (".keras", ".weights.h5", ".weights.json", ".h5", ".hdf5")


def check_weights(spec: BackboneSpec, weights) -> bool:
    """Raise ``ValueError`` unless ``spec`` can load ``weights`` (``None``, one of the spec's
    weight names, or a readable weights file); returns whether ``weights`` is a file.

    A file is checked before anything is built: it must exist, be a file of a kind Keras
    loads weights from, and begin as one (a ``.keras`` zip archive, an HDF5 ``.h5``).
    """
    if weights is None or (isinstance(weights, str) and weights in spec.weights):
        return False
    looks_like_path = isinstance(weights, str) and (
        weights.endswith(WEIGHTS_SUFFIXES) or os.sep in weights)
    if not is_weights_file(weights) and not looks_like_path:
        raise ValueError(
            f"{spec.key} cannot load weights {weights!r}: expected None, a weights file, or one "
            f"of {list(spec.weights)}. Received: weights={weights!r}"
        )
    if os.path.isdir(weights):
        return True  # an Orbax checkpoint directory: Keras reads it, and names it if it fails
    check_regular_file("weights", weights, "Weights file")
    if not weights.endswith(WEIGHTS_SUFFIXES):
        raise ValueError(
            f"Weights file {weights!r} is not a kind Keras loads weights from: expected a file "
            f"ending in {', '.join(WEIGHTS_SUFFIXES)}. Received: weights={weights!r}"
        )
    if not _begins_as_weights(weights):
        kind = "a zip archive (.keras)" if weights.endswith(".keras") else (
            "JSON" if weights.endswith(".json") else "an HDF5 file")
        raise ValueError(
            f"Weights file {weights!r} is not {kind}: it is damaged or not a weights file. "
            f"Expected the file model.save_weights wrote. Received: weights={weights!r}"
        )
    return True


def _begins_as_weights(path: str) -> bool:
    if path.endswith(".keras"):
        return zipfile.is_zipfile(path)
    if path.endswith(".json"):
        return True  # sharded weights: Keras checks the JSON and the shards it names
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def backbone_input_shape(spec: BackboneSpec, input_shape, resize=None) -> tuple[int, int, int]:
    """The shape the backbone runs at: ``resize`` if given, else the input shape raised to the
    backbone's minimum size where it is smaller (CIFAR-10's 32x32 for InceptionV3)."""
    h, w, c = input_shape
    if resize is not None:
        rh, rw, _ = parse_input_shape(tuple(resize), "resize")
        return (rh, rw, c)
    m = spec.min_input_size
    return (max(h, m), max(w, m), c)


def default_augmentation():
    """The Keras transfer-learning guide's augmentation: horizontal flip, small rotation."""
    import keras

    return [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)]


def build_model(
    backbone,
    num_classes: int | None = None,
    *,
    head: str | None = None,
    input_shape=None,
    weights="default",
    augmentation=None,
    resize=None,
    preprocessing: bool = True,
    name: str | None = None,
    bn: str = "frozen",
):
    """Assemble a transfer-learning model: augmentation, resizing, preprocessing, backbone, head.

    Args:
        backbone: a registered name (``"mobilenet_v2"``, ``"applications:vgg16"``) or a
            :class:`BackboneSpec`.
        num_classes: number of classes; the head ends with ``Dense(num_classes)`` (softmax, or
            sigmoid for 1) unless ``head`` already ends with a Dense layer.
        head: a head preset (``"gap"``, ``"vgg"``, ``"mlp"``, ``"mlp_bn"``) or a head spec such
            as ``"gap,dropout:0.2,dense:10:softmax"``. Defaults to ``"gap"``.
        input_shape: ``(H, W, C)`` of the images fed to the model (raw 0-255 pixels). Defaults
            to the backbone's default input shape.
        weights: ``"default"`` (the backbone's own pretrained weights: ``"imagenet"`` for
            keras.applications, downloaded once into Keras's cache; a local file's own
            weights), one of the spec's ``weights``, ``None`` (random) or a weights file.
        augmentation: ``None``, ``"default"`` (flip + rotation) or a list of Keras layers; runs
            only in training, before the backbone.
        resize: ``(H, W)`` to resize to inside the model; by default images smaller than the
            backbone's minimum are resized up to it.
        preprocessing: put the backbone's own preprocessing inside the model.
        name: the model's name.
        bn: the BatchNorm policy for when the backbone is unfrozen (see
            :mod:`keras_tlft.batchnorm`): ``"frozen"`` (the default; BatchNorm runs in inference
            mode while it is non-trainable, as every keras-tlft unfreeze keeps it), ``"affine"``
            (every backbone layer runs in inference mode whatever ``fit`` passes, as Keras 2's
            ``base_model(x, training=False)``: after ``backbone.trainable = True`` gamma and beta
            train and the moving statistics stay as loaded; the backbone's own ``Dropout``
            is off too) or ``"train"`` (BatchNorm follows ``fit``'s training mode once
            trainable). Keras does not save the inference mode in a ``.keras`` file (which
            plain Keras loads): pass the same ``bn`` to ``ProgressiveUnfreeze``, which applies
            it at the start of every ``fit``.

    Returns:
        A ``keras.Model`` whose nested backbone (layer ``"backbone"``, frozen) and head (layer
        ``"head"``) are what :class:`keras_tlft.ProgressiveUnfreeze` finds and unfreezes. The
        backbone is called without a ``training`` argument: a nested ``training=False`` is
        overridden by Keras 3.15 and earlier and kept by 3.16 (which then also runs the head
        in inference mode), so ``bn`` decides instead, alike on every Keras version.

    Example:
    ```python
    model = build_model("mobilenet_v2", num_classes=10, input_shape=(160, 160, 3),
                        head="gap,dropout:0.2,dense:10:softmax", weights="imagenet")
    ```
    """
    import keras

    bn = bn_policy(bn)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string (the model's name) or None. "
                        f"{received('name', name)}")
    spec = get_backbone(backbone)
    head_layers = resolve_head(head, num_classes)
    shape = parse_input_shape(input_shape if input_shape is not None else spec.default_input_shape)
    inner_shape = backbone_input_shape(spec, shape, resize)
    aug = _augmentation_layers(augmentation)  # checked before the (slow) backbone is built
    base = load_backbone(spec, inner_shape, weights)
    base = keras.Model(base.input, base.output, name=BACKBONE_LAYER)
    base.trainable = False
    set_backbone_inference([base], bn)
    setattr(base, SPEC_ATTRIBUTE, spec)

    inputs = keras.Input(shape, name="image")
    x = inputs
    if aug:
        x = keras.Sequential(aug, name="augmentation")(x)
    if inner_shape[:2] != shape[:2]:
        x = keras.layers.Resizing(*inner_shape[:2], name="resize")(x)
    prep = _preprocessing(spec, shape[-1]) if preprocessing else None
    if prep is not None:
        x = prep(x)
    # No training=False here: Keras <= 3.15 overrides it with fit's training=True, 3.16 keeps
    # it and leaves it in the call context for the head too, so the modes would depend on the
    # Keras version. The bn policy (set_backbone_inference above) decides instead.
    x = base(x)
    outputs = build_head(head_layers, name=HEAD_LAYER)(x)
    model = keras.Model(inputs, outputs, name=name or f"{_identifier(spec.name)}_transfer")
    setattr(model, SPEC_ATTRIBUTE, spec)
    setattr(model, BN_ATTRIBUTE, bn)
    if prep is not None:  # what keras_tlft.model.input_range checks the first batch against
        setattr(model, INPUT_RANGE_ATTRIBUTE, (0.0, 255.0))
    return model


def _preprocessing(spec, channels):
    from keras_tlft.model.preprocessing import preprocessing_layer

    return preprocessing_layer(spec, channels=channels)


def _augmentation_layers(augmentation) -> list:
    if augmentation is None or augmentation is False:
        return []
    if isinstance(augmentation, str):
        if augmentation != "default":
            raise ValueError(
                "augmentation must be None, 'default' or a list of Keras layers. "
                f"Received: augmentation={augmentation!r}"
            )
        return default_augmentation()
    layers = list(augmentation) if isinstance(augmentation, Sequence) else [augmentation]
    import keras

    if not all(isinstance(layer, keras.layers.Layer) for layer in layers):
        raise TypeError(
            "augmentation must be None, 'default' or a list of Keras layers, e.g. "
            "[keras.layers.RandomFlip('horizontal')]. "
            f"{received('augmentation', augmentation)}"
        )
    return layers


def _identifier(name: str) -> str:
    return re.sub(r"\W+", "_", name)

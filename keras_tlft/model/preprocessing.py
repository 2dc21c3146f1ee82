"""Preprocessing inside the model, built from plain Keras pieces so that a saved model carries it
and loads with Keras alone.

Every mode is an affine map per channel, after a channel flip for ``"caffe"``: the nested model
:func:`preprocessing_model` returns is ``keras.ops.flip`` (``"caffe"`` only) and one
``keras.layers.Rescaling`` with a scale and an offset per channel. A ``.keras`` file of a
:func:`keras_tlft.build_model` model therefore loads with ``keras.saving.load_model`` in a process
that has never imported keras-tlft, or where it is not installed at all.

:class:`ImagePreprocessing`, the layer keras-tlft 0.1 put in its models, stays here, registered
with Keras when this module is imported, so that files saved before still load: import
``keras_tlft.preprocessing`` before ``load_model`` for those.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_tlft.backbones.spec import PREPROCESSING_MODES

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

__all__ = ["ImagePreprocessing", "affine_parameters", "preprocessing_layer", "preprocessing_model"]


def _check_mode(mode) -> None:
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"Unknown preprocessing mode: expected one of {PREPROCESSING_MODES}. "
            f"Received: mode={mode!r}"
        )


def affine_parameters(mode: str) -> tuple[bool, list[float], list[float]]:
    """``(flip, scale, offset)`` of ``mode``: flip RGB to BGR if ``flip``, then ``x * scale +
    offset`` per channel, the arithmetic of ``keras.applications.<family>.preprocess_input``."""
    _check_mode(mode)
    if mode == "caffe":
        return True, [1.0] * 3, [-m for m in _CAFFE_MEAN_BGR]
    if mode == "tf":
        return False, [1.0 / 127.5] * 3, [-1.0] * 3
    if mode == "torch":
        scale = [1.0 / (255.0 * s) for s in _TORCH_STD]
        return False, scale, [-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD)]
    if mode == "rescale":
        return False, [1.0 / 255.0] * 3, [0.0] * 3
    return False, [1.0] * 3, [0.0] * 3


def preprocessing_model(mode: str, channels: int = 3, name: str = "preprocessing"):
    """A nested ``keras.Model`` mapping raw 0-255 RGB pixels to what ``mode`` expects, made only
    of built-in Keras pieces (``ops.flip``, ``layers.Rescaling``): it saves and loads without
    keras-tlft. ``mode`` is ``"caffe"``, ``"tf"``, ``"torch"`` or ``"rescale"``."""
    flip, scale, offset = affine_parameters(mode)
    if len(set(scale)) == 1 and len(set(offset)) == 1:  # the same for every channel
        scale, offset = scale[0], offset[0]
    elif channels != 3:
        raise ValueError(
            f"Preprocessing mode {mode!r} is defined for 3-channel RGB images: expected "
            "input_shape=(H, W, 3), or preprocessing=False. "
            f"Received: channels={channels}"
        )
    inputs = keras.Input((None, None, channels), name=f"{name}_input")
    x = ops.flip(inputs, axis=-1) if flip else inputs
    x = keras.layers.Rescaling(scale=scale, offset=offset, name=f"{name}_{mode}")(x)
    return keras.Model(inputs, x, name=name)


@keras.saving.register_keras_serializable(package="keras_tlft")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw 0-255 RGB pixels to what an ImageNet backbone expects (keras-tlft 0.1's layer).

    :func:`keras_tlft.build_model` no longer uses it (it builds :func:`preprocessing_model`,
    plain Keras); it stays so that models saved with it still load once this module is imported.

    Args:
        mode: ``"caffe"`` (RGB to BGR, ImageNet mean subtracted: VGG, ResNet v1), ``"tf"``
            (scaled to [-1, 1]: MobileNet, Inception, ResNet v2), ``"torch"`` (scaled to [0, 1],
            normalized by ImageNet mean and std: DenseNet), ``"rescale"`` (scaled to [0, 1]) or
            ``"none"`` (unchanged, for models that rescale inside themselves).
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        _check_mode(mode)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "rescale":
            return x / 255.0
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def preprocessing_layer(spec, name: str = "preprocessing", channels: int = 3):
    """The preprocessing of a backbone spec, as a layer (a spec's own callable, or
    :func:`preprocessing_model`), or ``None`` when it needs none."""
    if callable(spec.preprocessing):
        return spec.preprocessing()
    if spec.preprocessing == "none":
        return None
    return preprocessing_model(spec.preprocessing, channels, name=name)

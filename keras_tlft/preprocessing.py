"""Preprocessing as a Keras layer, so a saved model carries it."""

from __future__ import annotations

import keras
from keras import ops

from keras_tlft.spec import PREPROCESSING_MODES

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="keras_tlft")
class ImagePreprocessing(keras.layers.Layer):
    """Maps raw 0-255 RGB pixels to what an ImageNet backbone expects.

    Args:
        mode: ``"caffe"`` (RGB to BGR, ImageNet mean subtracted: VGG, ResNet v1), ``"tf"``
            (scaled to [-1, 1]: MobileNet, Inception, ResNet v2), ``"torch"`` (scaled to [0, 1],
            normalized by ImageNet mean and std: DenseNet), ``"rescale"`` (scaled to [0, 1]) or
            ``"none"`` (unchanged, for models that rescale inside themselves).

    The same arithmetic as ``keras.applications.<family>.preprocess_input``, as a layer.
    """

    def __init__(self, mode: str = "none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode: expected one of {PREPROCESSING_MODES}. "
                f"Received: mode={mode!r}"
            )
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


def preprocessing_layer(spec, name: str = "preprocessing"):
    """The preprocessing layer for a backbone spec, or ``None`` when it needs none."""
    if callable(spec.preprocessing):
        return spec.preprocessing()
    if spec.preprocessing == "none":
        return None
    return ImagePreprocessing(spec.preprocessing, name=name)

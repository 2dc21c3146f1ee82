"""The input-range guard: a warning, once per model, when the first batch's pixel values look
like the wrong range for the preprocessing inside the model.

A model from :func:`keras_tlft.build_model` carries its backbone's preprocessing (a layer named
``"preprocessing"``) and expects raw 0-255 pixels. Images already scaled to 0-1 (what
``skimage.img_as_float``, ``tf.image.convert_image_dtype`` and many loaders return) or already
normalized to -1..1 train without any error, only worse: the backbone sees nearly black
images. :func:`check_input_range` looks at one batch and warns with the fix;
:func:`~keras_tlft.fit_frozen`, :func:`~keras_tlft.lr_find` and :func:`~keras_tlft.fine_tune`
call it on the first batch of their data. Keras gives callbacks no batch, so
:class:`~keras_tlft.ProgressiveUnfreeze` cannot check a plain ``model.fit``: call
``check_input_range(model, x)`` yourself there.

The expected range is known when ``build_model`` put the preprocessing in (it records
:data:`INPUT_RANGE_ATTRIBUTE` on the model) or, for a model loaded from a ``.keras`` file, when
the model has a top-level layer named ``"preprocessing"``. A model without either (built with
``preprocessing=False``, a backbone whose spec has none, a model of your own) is not checked.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["INPUT_RANGE_ATTRIBUTE", "check_input_range", "expected_input_range", "first_inputs"]

INPUT_RANGE_ATTRIBUTE = "_keras_tlft_input_range"
PREPROCESSING_LAYER = "preprocessing"
_WARNED_ATTRIBUTE = "_keras_tlft_input_range_warned"
# Raw 0-255 pixels whose largest value is at most this are scaled data, not a dark photo.
_SCALED_MAX = 1.0 + 1e-3


def expected_input_range(model) -> tuple[float, float] | None:
    """The pixel range ``model`` expects: ``(0.0, 255.0)`` for a model whose preprocessing is
    inside it (from ``build_model``, or a top-level layer named ``"preprocessing"``), else
    ``None`` (not known: nothing is checked)."""
    recorded = getattr(model, INPUT_RANGE_ATTRIBUTE, None)
    if recorded is not None:
        return tuple(recorded)
    try:
        model.get_layer(PREPROCESSING_LAYER)
    except (ValueError, AttributeError):
        return None
    return (0.0, 255.0)


def check_input_range(model, x, where: str = "fit") -> bool:
    """Warn (``UserWarning``, once per model) when the values of the batch ``x`` look like the
    wrong range for ``model``'s preprocessing; returns whether it warned.

    Warns when the model expects raw 0-255 pixels (see :func:`expected_input_range`) and the
    batch is floating point with values no larger than 1: scaled to 0-1, or already normalized
    to -1..1. Inputs that are not one array (a dict of inputs) are not checked.

    Args:
        model: the model about to train.
        x: one batch of its inputs (an array).
        where: the function that trains, named in the message.
    """
    expected = expected_input_range(model)
    if expected is None or getattr(model, _WARNED_ATTRIBUTE, False):
        return False
    try:
        values = np.asarray(x)
    except Exception:  # a structure of inputs, or a tensor that does not convert
        return False
    if values.size == 0 or not np.issubdtype(values.dtype, np.floating):
        return False
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if not (expected[1] > 2 * _SCALED_MAX and 0.0 < high <= _SCALED_MAX):
        return False
    looks = "already normalized to -1..1" if low < 0 else "scaled to 0-1"
    warnings.warn(
        f"{where}: the first batch's pixel values lie in [{low:.3g}, {high:.3g}] ({looks}), but "
        f"this model has its backbone's preprocessing inside and expects raw "
        f"{expected[0]:g}-{expected[1]:g} pixels: it will train, only worse, on what it sees as "
        "nearly black images. Fix: pass the images as 0-255 values (e.g. x * 255 for 0-1 "
        "images), or build the model with build_model(..., preprocessing=False) if you "
        f"preprocess them yourself. Received: x.min()={low:.3g}, x.max()={high:.3g}",
        UserWarning,
        stacklevel=3,
    )
    setattr(model, _WARNED_ATTRIBUTE, True)
    return True


def first_inputs(x, batch_size: int | None = None):
    """The inputs of the first batch of ``x`` without consuming anything: the first rows of
    arrays, the first element of a ``tf.data.Dataset`` or item 0 of a ``PyDataset``; ``None``
    for anything else (a generator would lose the batch)."""
    import keras

    from keras_tlft.training.batching import is_tf_dataset

    try:
        if isinstance(x, np.ndarray):
            return x[: batch_size or 32]
        if isinstance(x, keras.utils.PyDataset):
            batch = x[0]
        elif is_tf_dataset(x):
            batch = next(iter(x.take(1)))
        else:
            return None
    except Exception:  # an empty or failing dataset: fit reports that itself
        return None
    return batch[0] if isinstance(batch, (tuple, list)) else batch

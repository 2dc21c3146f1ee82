"""Batches in, for the features' extraction (arrays, ``tf.data`` datasets, ``PyDataset``), and
batches of cached features out, for the head's training."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

__all__ = ['Batches', 'CachedBatches', 'CachedData', 'batches_of', 'check_arrays',
           'split_validation', 'unpack']


@dataclass
class Batches:
    """One pass over data in batches of ``(x, y, sample_weight)`` (``iterate()``), with what is
    known of its length and batch size (``None`` where unknown)."""

    iterate: Callable[[], Iterator]
    num_batches: int | None
    rows: int | None
    batch_size: int | None


def batches_of(x, y, sample_weight, batch_size, name) -> Batches:
    if is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset):
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"When {name} is a dataset it yields the targets itself: y and sample_weight "
                f"must be None. Received: y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )
        return dataset_batches(x, batch_size, name)
    if x is None:
        raise ValueError(f"fit_frozen needs training data. Received: {name}=None")
    leaves = [a for a in keras.tree.flatten(x) if a is not None]
    if not leaves or not hasattr(leaves[0], "shape"):
        raise ValueError(
            f"{name} must be arrays (or a dict of arrays), a tf.data.Dataset or a "
            f"keras.utils.PyDataset. Received: {name}={type(x).__name__}"
        )
    rows = int(leaves[0].shape[0])
    size = batch_size or 32

    def iterate():
        for start in range(0, rows, size):
            yield slice_rows((x, y, sample_weight), slice(start, start + size))

    return Batches(iterate, math.ceil(rows / size), rows, size)


def check_arrays(model, x, y, sample_weight=None, name="x") -> int | None:
    """Raise ``ValueError`` when arrays cannot be the model's data: ``y`` (or
    ``sample_weight``) of another length than ``x``, or samples of another shape than the
    model's single input takes. Datasets and anything without a shape are left to Keras.
    Returns the number of samples (``None`` where it was left to Keras)."""
    leaves = [a for a in keras.tree.flatten(x) if a is not None]
    if not leaves or not all(hasattr(a, "shape") for a in leaves):
        return None
    rows = int(leaves[0].shape[0])
    for what, value in (("y", y), ("sample_weight", sample_weight)):
        for part in [] if value is None else keras.tree.flatten(value):
            length = int(np.shape(part)[0]) if np.ndim(part) else None
            if length != rows:
                raise ValueError(
                    f"{name} and {what} must hold the same number of samples: {rows} in {name}, "
                    f"{length} in {what}. Received: {name}.shape={tuple(leaves[0].shape)}, "
                    f"{what}.shape={np.shape(part)}"
                )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed or unbuilt model: Keras checks it
        return rows
    if len(leaves) != 1 or not inputs or len(inputs) != 1:
        return rows
    expected, got = tuple(inputs[0].shape[1:]), tuple(leaves[0].shape[1:])
    if len(expected) != len(got) or any(e not in (None, g) for e, g in zip(expected, got)):
        shown = tuple("?" if e is None else e for e in expected)
        raise ValueError(
            f"The samples of {name} have the shape {got}, but the model takes {shown}: resize "
            f"the images, or build the model with input_shape={got}. "
            f"Received: {name}.shape={tuple(leaves[0].shape)}"
        )
    return rows


def dataset_batches(data, batch_size, name) -> Batches:
    if batch_size is not None:
        raise ValueError(
            f"When {name} is a dataset its own batches are used: batch_size must be None. "
            f"Received: batch_size={batch_size}"
        )
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches  # None: infinite
        infinite = count is None

        def iterate():
            for i in range(count):
                yield unpack(data[i])

    else:
        cardinality = int(data.cardinality())  # -1: infinite, -2: unknown
        infinite = cardinality == -1
        count = cardinality if cardinality >= 0 else None

        def iterate():
            for batch in data.as_numpy_iterator():
                yield unpack(batch)

    if infinite:
        raise ValueError(
            f"{name} must be finite to be cached: fit_frozen reads it once. Take one epoch's "
            f"batches, e.g. dataset.take(steps). Received: {name}={data!r}"
        )
    return Batches(iterate, count, None, None)


def is_tf_dataset(x) -> bool:
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def unpack(data):
    """``(x, y, sample_weight)`` from a batch or a validation tuple, as Keras unpacks them."""
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) not in (1, 2, 3):
        raise ValueError(
            "Data must be x, (x,), (x, y) or (x, y, sample_weight). "
            f"Received: a tuple of {len(data)} items"
        )
    return (*data, None, None)[:3]


def slice_rows(structure, index):
    return keras.tree.map_structure(lambda a: None if a is None else a[index], structure)


def split_validation(arrays, split, validation_data):
    if validation_data is not None:
        return arrays, validation_data
    if not 0.0 < split < 1.0:
        raise ValueError(
            "validation_split must be a fraction between 0 and 1. "
            f"Received: validation_split={split!r}"
        )
    if is_tf_dataset(arrays[0]) or isinstance(arrays[0], keras.utils.PyDataset):
        raise ValueError(
            "validation_split only splits arrays; pass validation_data with a dataset. "
            f"Received: x={type(arrays[0]).__name__}"
        )
    rows = int(keras.tree.flatten(arrays[0])[0].shape[0])
    at = int(math.floor(rows * (1.0 - split)))
    if at in (0, rows):
        raise ValueError(
            f"validation_split leaves an empty set: {rows} samples cannot be split. "
            f"Received: validation_split={split}"
        )
    return slice_rows(arrays, slice(0, at)), slice_rows(arrays, slice(at, None))


@dataclass
class CachedData:
    """Cached features with their labels, sample weights and the batch size they came in."""

    features: np.ndarray
    labels: Any
    sample_weight: Any
    batch_size: int


class CachedBatches(keras.utils.PyDataset):
    """Batches of cached features, as ``model.fit`` would cut the arrays; reshuffled before
    every epoch when ``shuffle``. Indexing a memory-mapped file reads one batch at a time."""

    def __init__(self, data: CachedData, batch_size: int, shuffle: bool):
        super().__init__()
        self.data, self.size, self.shuffle = data, batch_size, shuffle
        self.order = np.arange(len(data.features))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.order) / self.size)

    def __getitem__(self, i):
        index = self.order[i * self.size : (i + 1) * self.size]
        index = np.sort(index) if self.shuffle else slice(index[0], index[-1] + 1)
        batch = (self.data.features[index],)
        if self.data.labels is not None:
            batch += slice_rows((self.data.labels,), index)
        if self.data.sample_weight is not None:
            batch += slice_rows((self.data.sample_weight,), index)
        return batch

    def on_epoch_end(self):
        if self.shuffle:
            np.random.shuffle(self.order)


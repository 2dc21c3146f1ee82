"""Frozen-phase feature caching: one backbone pass for every frozen epoch.

While the backbone is frozen and nothing random runs before it, every epoch of ``model.fit``
recomputes the same backbone features. :func:`fit_frozen` computes them once (batched, in
inference mode, in memory or in a file on disk), then trains the model's own head layers on them
with the model's own loss, metrics and optimizer. The unfrozen stages go on with ``model.fit``::

    frozen = tlft.fit_frozen(model, x, y, epochs=4, validation_data=(x_val, y_val))
    model.fit(x, y, epochs=20, initial_epoch=4, validation_data=(x_val, y_val),
              callbacks=[tlft.ProgressiveUnfreeze(...)])
    history = tlft.join_histories(frozen, model.history)

It refuses (``ValueError``) whenever caching would change what ``model.fit`` computes.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from keras_tlft.assembly import BACKBONE_LAYER

__all__ = ["check_cacheable", "fit_frozen", "join_histories"]

CACHE_MODES = ("auto", "memory")
_FALLBACK_AVAILABLE_BYTES = 4 * 2**30
_SHOWN = 3  # offending layers named in a refusal message


# ----------------------------------------------------------------------------------------------
# The public API


def fit_frozen(
    model,
    x=None,
    y=None,
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    validation_data=None,
    validation_split: float = 0.0,
    callbacks=None,
    shuffle: bool = True,
    sample_weight=None,
    cache="auto",
    max_memory_bytes: int | None = None,
    backbone=BACKBONE_LAYER,
    verbose="auto",
    **fit_kwargs,
) -> keras.callbacks.History:
    """Train a frozen-backbone model's head on backbone features computed once.

    The drop-in replacement for ``model.fit`` during the frozen phase of transfer learning:
    everything up to the backbone's output (resizing, preprocessing, the backbone itself) runs
    once over ``x`` and once over the validation data, batched and in inference mode; then the
    model's own head layers train for ``epochs`` epochs on those features, with the model's
    loss, metrics and optimizer (``model.optimizer`` itself, so its state carries into a later
    ``model.fit``). ``N`` frozen epochs cost one backbone pass instead of ``N``.

    Callbacks see the full ``model`` (``ModelCheckpoint`` saves it, ``EarlyStopping`` stops and
    restores it, ``ReduceLROnPlateau`` changes ``model.optimizer``); the logs have the names
    ``model.fit`` would give them. Continue with ``model.fit(..., initial_epoch=epochs)`` and
    :func:`join_histories` for one history of the whole run.

    It raises ``ValueError`` where caching would change the result (see
    :func:`check_cacheable`): random layers before or inside the backbone (augmentation,
    dropout, noise), trainable weights before the backbone's output, BatchNormalization layers
    that ``model.fit`` would run in training mode.

    Args:
        model: a compiled functional or Sequential model, e.g. from
            :func:`keras_tlft.build_model`, whose ``backbone`` layer is frozen.
        x: input data: arrays (or a dict of arrays), a ``tf.data.Dataset`` or a
            ``keras.utils.PyDataset`` yielding ``(x, y)`` or ``(x, y, sample_weight)``. A
            dataset is read once: random transforms inside it are frozen into the cache.
        y: target data, for arrays only.
        epochs: the epoch to stop at, as in ``model.fit`` (with ``initial_epoch``).
        batch_size: samples per batch, for extraction and training. Defaults to 32 for arrays,
            and to the size of the first batch for a dataset.
        validation_data: ``(x_val, y_val)``, ``(x_val, y_val, sample_weight)``, a dataset or
            a ``PyDataset``; its features are cached the same way.
        validation_split: fraction of the arrays ``x`` and ``y`` (the last samples, as in
            ``model.fit``) held out as validation data.
        callbacks: Keras callbacks; they are given the full model.
        shuffle: reshuffle the cached training samples before every epoch.
        sample_weight: per-sample weights, for arrays only.
        cache: where the features live: ``"auto"`` (in memory up to ``max_memory_bytes``, then
            in a file in the system's temporary directory), ``"memory"`` (in memory whatever
            their size) or a directory (in a file there, in memory first only if
            ``max_memory_bytes`` is given). Files are deleted when ``fit_frozen`` returns or
            fails.
        max_memory_bytes: the most bytes of features kept in memory. Defaults to half of the
            memory available when ``fit_frozen`` starts (for ``"auto"``).
        backbone: the layer whose output is cached, or its name: the nested backbone model
            (``"backbone"`` in models from ``build_model``), or in a flat model the backbone's
            last layer. Everything before it must be frozen and free of randomness.
        verbose: ``"auto"``, 0, 1 or 2, as in ``model.fit``; 1 and ``"auto"`` also show a
            progress bar for the extraction.
        **fit_kwargs: other ``model.fit`` arguments, passed to the head's ``fit``
            (``initial_epoch``, ``class_weight``, ``validation_freq``, ``steps_per_epoch``,
            ``validation_steps``, ``validation_batch_size``).

    Returns:
        The ``keras.callbacks.History`` of the frozen epochs (numbered as in ``model.fit``),
        also set as ``model.history``. ``history.params["feature_cache"]`` says where the
        features were kept (``"storage"``: ``"memory"`` or ``"disk"`` for the training and
        the validation features), their size (``"bytes"``, ``"memory_bytes"``) and the
        seconds the extraction took (``"extraction_seconds"``).

    Example:
    ```python
    model = tlft.build_model("mobilenet_v2", num_classes=10, weights="imagenet")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    frozen = tlft.fit_frozen(model, x, y, epochs=4, validation_data=(x_val, y_val))
    model.get_layer("backbone").trainable = True   # or a ProgressiveUnfreeze callback
    model.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=10, initial_epoch=4, validation_data=(x_val, y_val))
    history = tlft.join_histories(frozen, model.history)
    ```
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer. Received: epochs={epochs!r}")
    budget, directory = _cache_policy(cache, max_memory_bytes)
    _check_compiled(model)
    extractor, head = split_at_backbone(model, backbone)
    _check_extractor(extractor)
    if validation_split:
        (x, y, sample_weight), validation_data = _split_validation(
            (x, y, sample_weight), validation_split, validation_data
        )
    parts = {"training": _batches(x, y, sample_weight, batch_size, "x")}
    if validation_data is not None:
        val_size = fit_kwargs.pop("validation_batch_size", None) or batch_size
        parts["validation"] = _batches(*_unpack(validation_data), val_size, "validation_data")

    stores = []
    try:
        started = time.perf_counter()
        cached = {
            what: _extract(extractor, batches, what, stores, budget, directory, verbose)
            for what, batches in parts.items()
        }
        seconds = time.perf_counter() - started
        history = _fit_head(
            model, extractor, head, cached, epochs, shuffle, callbacks, verbose, fit_kwargs
        )
        history.params["feature_cache"] = _cache_report(stores, seconds)
        return history
    finally:
        for store in stores:
            store.close()


def check_cacheable(model, backbone=BACKBONE_LAYER) -> None:
    """Raise ``ValueError`` if caching the backbone's features would change ``model.fit``.

    Caching assumes that everything up to the backbone's output computes the same thing at
    every epoch of ``model.fit``. Keras 3 passes ``fit``'s ``training=True`` down into nested
    models even where the model was called with ``training=False``, so three things break it:

    - layers that draw random numbers (augmentation, ``Dropout``, ``GaussianNoise``: any
      layer with a seed generator) before or inside the backbone;
    - trainable weights before the backbone's output (a backbone that is not frozen);
    - ``BatchNormalization`` layers there that are trainable: ``model.fit`` runs them in
      training mode (batch statistics, moving averages updated).

    Args:
        model: a functional or Sequential model.
        backbone: the layer whose output would be cached, or its name.

    Example:
    ```python
    model = tlft.build_model("mobilenet_v2", 10, augmentation="default", weights=None)
    tlft.check_cacheable(model)  # ValueError: ... random layers before or inside the backbone
    ```
    """
    _check_extractor(_extractor(model, _find_backbone(model, backbone)))


def _check_extractor(extractor) -> None:
    """``check_cacheable`` on the part of the model up to the backbone's output."""
    layers = list(_walk(extractor))
    random = [path for path, layer in layers if _is_random(layer)]
    if random:
        raise ValueError(
            "Cannot cache the backbone's features: layers before or inside the backbone draw "
            "random numbers in model.fit (augmentation, dropout, noise: Keras passes fit's "
            "training=True into nested models, even into a backbone called with "
            "training=False), and a cache would freeze one draw for every epoch. Remove them "
            f"from the model or train with model.fit. Received: random layers={_shown(random)}"
        )
    trainable = [v.path for v in extractor.trainable_weights]
    if trainable:
        raise ValueError(
            "Cannot cache the backbone's features: the backbone is not frozen; model.fit "
            f"would train {len(trainable)} weights up to its output, so the features would "
            "change every step. Freeze it (`trainable = False` on the backbone, or on the "
            "layers that hold these weights) or train with model.fit. "
            f"Received: trainable weights={_shown(trainable)}"
        )
    batchnorm = [path for path, layer in layers if _runs_in_training_mode(layer)]
    if batchnorm:
        raise ValueError(
            "Cannot cache the backbone's features: BatchNormalization layers before the "
            "backbone's output are trainable, so model.fit runs them in training mode (batch "
            "statistics, moving averages updated). Set `trainable = False` on them or train "
            f"with model.fit. Received: trainable BatchNormalization={_shown(batchnorm)}"
        )


def join_histories(*histories) -> keras.callbacks.History:
    """One ``History`` for a run made of several ``fit`` calls, in the order given.

    Epoch numbers are kept (``fit_frozen`` gives ``0..N-1``, ``model.fit(initial_epoch=N)``
    gives ``N..``); a history whose numbers would repeat the previous one's (a ``fit`` without
    ``initial_epoch``) is renumbered to follow it. A metric missing from one part (logged by a
    callback of one stage only) reads ``None`` for those epochs.

    Args:
        *histories: ``keras.callbacks.History`` objects, as ``fit`` returns them.

    Returns:
        A new ``History`` whose ``epoch`` and ``history`` cover every part, and whose ``model``
        and ``params`` are those of the last part.

    Example:
    ```python
    frozen = tlft.fit_frozen(model, x, y, epochs=4)
    model.fit(x, y, epochs=10, initial_epoch=4)
    history = tlft.join_histories(frozen, model.history)
    history.epoch  # [0, 1, ..., 9]
    ```
    """
    for i, part in enumerate(histories):
        if not (hasattr(part, "history") and hasattr(part, "epoch")):
            raise TypeError(
                "join_histories expects the keras.callbacks.History objects that fit returns. "
                f"Received: histories[{i}]={part!r}"
            )
    joined = keras.callbacks.History()
    joined.epoch = []
    for part in histories:
        offset = 0
        if joined.epoch and part.epoch and part.epoch[0] <= joined.epoch[-1]:
            offset = joined.epoch[-1] + 1 - part.epoch[0]
        before = len(joined.epoch)
        for key in part.history:
            joined.history.setdefault(key, [None] * before)
        for key, values in joined.history.items():
            values.extend(part.history.get(key, [None] * len(part.epoch)))
        joined.epoch.extend(epoch + offset for epoch in part.epoch)
    if histories:
        joined.params = dict(getattr(histories[-1], "params", None) or {})
        if getattr(histories[-1], "model", None) is not None:
            joined.set_model(histories[-1].model)
    return joined


# ----------------------------------------------------------------------------------------------
# The model cut in two at the backbone's output


def split_at_backbone(model, backbone=BACKBONE_LAYER):
    """``(extractor, head)``: ``model`` cut at the backbone's output, sharing every layer.

    ``extractor`` maps the model's inputs to the backbone's output (with whatever runs before
    it); ``head`` maps that output to the model's outputs.
    """
    layer = _find_backbone(model, backbone)
    extractor = _extractor(model, layer)
    _, outputs = _graph_ends(model)
    try:
        head = keras.Model(extractor.output, outputs, name=f"{model.name}_head")
        # Keras 3.14+ refuses such a graph above; 3.13 builds it with the model's own input
        # layer inside, and fails only when it is called.
        if sum(isinstance(op, keras.layers.InputLayer) for op in head.operations) > 1:
            raise ValueError("the head's graph reaches the model's inputs")
    except ValueError as exc:
        raise ValueError(
            "Cannot train the head on cached features: the layers after the backbone also use "
            "the model's inputs, not only the backbone's output. Train with model.fit. "
            f"Received: backbone={layer.name!r}"
        ) from exc
    return extractor, head


def _extractor(model, layer):
    """The part of ``model`` from its inputs to ``layer``'s output."""
    inputs, _ = _graph_ends(model)
    return keras.Model(inputs, _backbone_output(model, layer), name=f"{model.name}_features")


def _graph_ends(model):
    """The model's symbolic inputs and outputs, in their structure."""
    if isinstance(model, keras.Sequential):
        return model.inputs[0], model.outputs[0]
    return model.input, model.output


def _find_backbone(model, backbone):
    if not getattr(model, "outputs", None):
        raise ValueError(
            "fit_frozen needs a functional or Sequential model built on a keras.Input, whose "
            "graph shows what runs before and after the backbone. "
            f"Received: model={type(model).__name__}"
        )
    if isinstance(backbone, keras.layers.Layer):
        return backbone
    names = [layer.name for layer in model.layers]
    if backbone not in names:
        raise ValueError(
            f"No layer named {backbone!r} in the model: pass backbone= the name of the frozen "
            f"feature extractor, one of {names}. Received: backbone={backbone!r}"
        )
    return model.get_layer(backbone)


def _backbone_output(model, layer):
    """The output tensor of ``layer``'s one call in ``model``'s graph."""
    found, seen, stack = [], set(), list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        if operation is layer:
            found.append(tensor)
            continue
        stack.extend(operation._inbound_nodes[node_index].input_tensors)
    if not found:
        raise ValueError(
            f"The backbone layer {layer.name!r} is not part of the model: it lies on no path "
            f"from the model's inputs to its outputs. Received: backbone={layer.name!r}"
        )
    if len(found) > 1:
        raise ValueError(
            f"The backbone must be called exactly once, with one output, between the model's "
            f"inputs and outputs; it is called {len(found)} times. "
            f"Received: backbone={layer.name!r}"
        )
    return found[0]


def _walk(layer, prefix=""):
    """``(path, sublayer)`` for every layer inside ``layer``, depth first."""
    for child in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}{child.name}"
        yield path, child
        yield from _walk(child, f"{path}/")


def _is_random(layer) -> bool:
    if getattr(layer, "rate", None) == 0:
        return False  # Dropout(0) is the identity
    return bool(getattr(layer, "_seed_generators", None))


def _runs_in_training_mode(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization) and layer.trainable


def _shown(items) -> str:
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{items[:_SHOWN]}{more}"


def _check_compiled(model) -> None:
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "fit_frozen trains the model's head with the model's own loss, metrics and "
            "optimizer: compile the model first, e.g. model.compile('adam', "
            "'sparse_categorical_crossentropy', metrics=['accuracy']). "
            f"Received: model.compiled={getattr(model, 'compiled', False)}"
        )


# ----------------------------------------------------------------------------------------------
# Data: batches in, features out


@dataclass
class _Batches:
    """One pass over data in batches of ``(x, y, sample_weight)`` (``iterate()``), with what is
    known of its length and batch size (``None`` where unknown)."""

    iterate: Callable[[], Iterator]
    num_batches: int | None
    rows: int | None
    batch_size: int | None


def _batches(x, y, sample_weight, batch_size, name) -> _Batches:
    if _is_tf_dataset(x) or isinstance(x, keras.utils.PyDataset):
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"When {name} is a dataset it yields the targets itself: y and sample_weight "
                f"must be None. Received: y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )
        return _dataset_batches(x, batch_size, name)
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
            yield _slice((x, y, sample_weight), slice(start, start + size))

    return _Batches(iterate, math.ceil(rows / size), rows, size)


def _dataset_batches(data, batch_size, name) -> _Batches:
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
                yield _unpack(data[i])

    else:
        cardinality = int(data.cardinality())  # -1: infinite, -2: unknown
        infinite = cardinality == -1
        count = cardinality if cardinality >= 0 else None

        def iterate():
            for batch in data.as_numpy_iterator():
                yield _unpack(batch)

    if infinite:
        raise ValueError(
            f"{name} must be finite to be cached: fit_frozen reads it once. Take one epoch's "
            f"batches, e.g. dataset.take(steps). Received: {name}={data!r}"
        )
    return _Batches(iterate, count, None, None)


def _is_tf_dataset(x) -> bool:
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def _unpack(data):
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


def _slice(structure, index):
    return keras.tree.map_structure(lambda a: None if a is None else a[index], structure)


def _split_validation(arrays, split, validation_data):
    if validation_data is not None:
        return arrays, validation_data
    if not 0.0 < split < 1.0:
        raise ValueError(
            "validation_split must be a fraction between 0 and 1. "
            f"Received: validation_split={split!r}"
        )
    if _is_tf_dataset(arrays[0]) or isinstance(arrays[0], keras.utils.PyDataset):
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
    return _slice(arrays, slice(0, at)), _slice(arrays, slice(at, None))


def _extract(extractor, batches, what, stores, budget, directory, verbose):
    """Run ``extractor`` over ``batches`` once; returns ``_CachedData``."""
    budget -= sum(store.memory_bytes for store in stores)  # one budget for all the parts
    store = _FeatureStore(budget, directory, batches.rows, batches.num_batches)
    stores.append(store)
    verbose = 1 if verbose == "auto" else verbose
    progbar = keras.utils.Progbar(batches.num_batches, verbose=verbose, unit_name="batch")
    if verbose:
        print(f"Caching the backbone's features of the {what} data {store.where()}")
    labels, weights, batch_size = [], [], batches.batch_size
    for step, (x, y, sample_weight) in enumerate(batches.iterate(), start=1):
        store.append(extractor.predict_on_batch(x))
        labels.append(y)
        weights.append(sample_weight)
        batch_size = batch_size or int(keras.tree.flatten(x)[0].shape[0])
        progbar.update(step)
    if not labels:
        raise ValueError(f"The {what} data has no samples. Received: 0 batches")
    if batches.num_batches is None:
        progbar.update(len(labels), finalize=True)
    return _CachedData(store.result(), _concat(labels), _concat(weights), batch_size)


def _concat(batches):
    if batches[0] is None:
        return None
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


class _FeatureStore:
    """Feature rows appended batch by batch: in memory while they fit in ``budget`` bytes, then
    in a file in ``directory`` (deleted by :meth:`close`).

    With ``rows``, or ``batches`` (then ``rows`` is ``batches`` times the first batch's size),
    an upper bound on the row count is known: the memory is allocated once, so the cache costs
    its own size and no more. Without, the batches are joined at the end.
    """

    def __init__(self, budget, directory, rows=None, batches=None):
        self.budget, self.directory, self.rows, self.batches = budget, directory, rows, batches
        self.count = 0
        self.path = None
        self._file = None
        self._buffer = None
        self._chunks = []
        self._row = None  # (shape, dtype) of one row

    def where(self) -> str:
        if self.budget <= 0:
            return f"on disk in {self.directory}"
        if self.budget == math.inf:
            return "in memory"
        return f"in memory up to {self.budget / 2**20:.0f} MiB, then on disk in {self.directory}"

    @property
    def storage(self) -> str:
        return "memory" if self.path is None else "disk"

    @property
    def bytes(self) -> int:
        return self.count * self._row_bytes() if self._row else 0

    @property
    def memory_bytes(self) -> int:
        return self.bytes if self.path is None else 0

    def append(self, batch) -> None:
        if isinstance(batch, (list, tuple, dict)):
            raise ValueError(
                "Only a backbone with one output can be cached. "
                f"Received: backbone outputs={type(batch).__name__}"
            )
        batch = np.asarray(batch)
        if self._row is None:
            self._row = (batch.shape[1:], batch.dtype)
            if self.rows is None and self.batches is not None:
                self.rows = self.batches * len(batch)
            if self.rows is not None and self.rows * self._row_bytes() > self.budget:
                self._open_file()
            elif self.rows is not None:
                self._buffer = np.empty((self.rows, *batch.shape[1:]), batch.dtype)
        if self._file is not None:
            self._file.write(np.ascontiguousarray(batch).tobytes())
        elif self._buffer is not None and self.count + len(batch) <= len(self._buffer):
            self._buffer[self.count : self.count + len(batch)] = batch
        else:
            self._to_chunks()
            self._chunks.append(batch)
            if (self.count + len(batch)) * self._row_bytes() > self.budget:
                self._open_file()
        self.count += len(batch)

    def result(self) -> np.ndarray:
        shape, dtype = self._row
        if self._file is not None:
            self._file.close()
            self._file = None
            return np.memmap(self.path, dtype=dtype, mode="r", shape=(self.count, *shape))
        if self._buffer is not None:
            return self._buffer[: self.count]
        return np.concatenate(self._chunks)

    def close(self) -> None:
        """Delete the file, if there is one; the features are gone after this."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None and os.path.exists(self.path):
            os.remove(self.path)
        self._buffer, self._chunks = None, []

    def _row_bytes(self) -> int:
        shape, dtype = self._row
        return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

    def _to_chunks(self) -> None:
        if self._buffer is not None:
            self._chunks = [self._buffer[: self.count].copy()]
            self._buffer = None

    def _open_file(self) -> None:
        handle, self.path = tempfile.mkstemp(
            prefix="tlft-features-", suffix=".bin", dir=self.directory
        )
        self._file = os.fdopen(handle, "wb")
        self._to_chunks()
        for chunk in self._chunks:
            self._file.write(np.ascontiguousarray(chunk).tobytes())
        self._chunks = []


def _cache_policy(cache, max_memory_bytes):
    """``(budget in bytes, directory or None)`` for the ``cache`` argument."""
    if max_memory_bytes is not None and (
        not isinstance(max_memory_bytes, (int, float)) or max_memory_bytes < 0
    ):
        raise ValueError(
            "max_memory_bytes must be a non-negative number of bytes. "
            f"Received: max_memory_bytes={max_memory_bytes!r}"
        )
    if cache == "memory":
        return math.inf, None
    if cache == "auto":
        budget = _available_memory() // 2 if max_memory_bytes is None else max_memory_bytes
        return budget, tempfile.gettempdir()
    if isinstance(cache, (str, os.PathLike)) and os.path.isdir(cache):
        return (max_memory_bytes or 0), os.fspath(cache)
    raise ValueError(
        f"cache must be one of {CACHE_MODES} or an existing directory to write the feature "
        f"files in. Received: cache={cache!r}"
    )


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return _FALLBACK_AVAILABLE_BYTES


def _cache_report(stores, seconds) -> dict:
    """Where the features were kept, their bytes and the extraction's seconds (JSON-able)."""
    return {
        "storage": [store.storage for store in stores],
        "bytes": sum(store.bytes for store in stores),
        "memory_bytes": sum(store.memory_bytes for store in stores),
        "extraction_seconds": seconds,
    }


# ----------------------------------------------------------------------------------------------
# Training the head


@dataclass
class _CachedData:
    """Cached features with their labels, sample weights and the batch size they came in."""

    features: np.ndarray
    labels: Any
    sample_weight: Any
    batch_size: int


class _CachedBatches(keras.utils.PyDataset):
    """Batches of cached features, as ``model.fit`` would cut the arrays; reshuffled before
    every epoch when ``shuffle``. Indexing a memory-mapped file reads one batch at a time."""

    def __init__(self, data: _CachedData, batch_size: int, shuffle: bool):
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
            batch += _slice((self.data.labels,), index)
        if self.data.sample_weight is not None:
            batch += _slice((self.data.sample_weight,), index)
        return batch

    def on_epoch_end(self):
        if self.shuffle:
            np.random.shuffle(self.order)


class _HeadTrainer(keras.Model):
    """The head as a model of its own: the same layers, so the same weights.

    ``stop_training`` is the full model's, for callbacks (which see the full model) to stop it.
    """

    def __init__(self, head, model):
        super().__init__(name=head.name)
        self.head = head
        self._full_model = weakref.ref(model)

    def call(self, features, training=None):
        return self.head(features, training=training)

    @property
    def stop_training(self):
        return self._full_model().stop_training

    @stop_training.setter
    def stop_training(self, value):
        self._full_model().stop_training = value


class _FrozenGuard(keras.callbacks.Callback):
    """Fails the run when a callback unfreezes what the cache stands for."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def on_epoch_begin(self, epoch, logs=None):
        try:
            _check_extractor(self.extractor)
        except ValueError as exc:
            raise RuntimeError(
                f"A callback changed the frozen part of the model at epoch {epoch}, so the "
                "cached features are stale: use fit_frozen for the frozen epochs only and pass "
                f"unfreezing callbacks to model.fit. {exc}"
            ) from exc


def _fit_head(model, extractor, head, cached, epochs, shuffle, callbacks, verbose, fit_kwargs):
    """Train ``head`` on ``cached`` features; callbacks see ``model``."""
    trainer = _HeadTrainer(head, model)
    trainer.compile(**_compile_arguments(model))
    train, val = cached["training"], cached.get("validation")
    batches = _CachedBatches(train, train.batch_size, shuffle)
    validation = None if val is None else _CachedBatches(val, val.batch_size, shuffle=False)
    steps = fit_kwargs.get("steps_per_epoch") or len(batches)
    history = keras.callbacks.History()
    guard = _FrozenGuard(extractor)
    callbacks = list(getattr(callbacks, "callbacks", callbacks) or [])  # a CallbackList too
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, guard, history],
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps,
    )
    model.stop_training = False
    trainer.history = history
    trainer.fit(
        batches,
        epochs=epochs,
        validation_data=validation,
        callbacks=callback_list,
        verbose=verbose,
        shuffle=False,
        **fit_kwargs,
    )
    return history


def _compile_arguments(model) -> dict:
    """The arguments ``model`` was compiled with, its optimizer object included."""
    config = dict(model._compile_config.config)
    config["optimizer"] = model.optimizer
    return config

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

import time
import weakref

import keras
import numpy as np

from keras_tlft import _keras_compat as compat
from keras_tlft.model.batchnorm import set_backbone_inference
from keras_tlft.model.discovery import find_backbone
from keras_tlft.model.graph import check_cacheable, check_extractor, split_at_backbone
from keras_tlft.model.input_range import check_input_range, first_inputs
from keras_tlft.training.batching import (
    CachedBatches,
    CachedData,
    batches_of,
    check_arrays,
    split_validation,
    unpack,
)
from keras_tlft.training.feature_store import (
    FeatureStore,
    cache_policy,
    cache_report,
    remove_stale_feature_files,
)
from keras_tlft.training.history import join_histories

# check_cacheable and join_histories are re-exported where keras-tlft 0.1 defined them.
__all__ = ["check_cacheable", "fit_frozen", "join_histories"]


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
    backbone=None,
    bn: str | None = None,
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
            fails; those of a killed run (named ``tlft-features-HOST-PID-*.bin``) by the next
            ``fit_frozen`` that uses the same folder, once that process is gone.
        max_memory_bytes: the most bytes of features kept in memory. Defaults to half of the
            memory available when ``fit_frozen`` starts (for ``"auto"``).
        backbone: the backbone, found as ``ProgressiveUnfreeze`` finds it: ``None`` (the layer
            ``"backbone"`` of a model from ``build_model``, or else the only nested model with
            weights), a layer name (a nested model, or in a flat model the backbone's last
            layer) or a layer object. Everything before its output must be frozen and free of
            randomness.
        bn: the BatchNorm policy of the run (see :mod:`keras_tlft.batchnorm`), applied to the
            backbone first: under ``"affine"`` the whole backbone runs in inference mode, so
            a backbone with its own ``Dropout`` (EfficientNet's) can be cached too, exactly as
            ``model.fit`` with ``ProgressiveUnfreeze(..., bn="affine")`` trains it. ``None``
            (the default) leaves the model as it is (as :func:`keras_tlft.build_model`'s
            ``bn`` made it); ``"frozen"`` and ``"train"`` let the backbone follow ``fit``'s
            training mode (its BatchNorm layers are frozen in this phase either way).
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
    budget, directory = cache_policy(cache, max_memory_bytes)
    if directory is not None:
        remove_stale_feature_files(directory)  # left by killed runs: their process is gone
    _check_compiled(model)
    check_input_range(model, first_inputs(x, batch_size), "fit_frozen")
    if bn is not None:
        _, layers, container = find_backbone(model, backbone)
        set_backbone_inference([container] if container is not None else layers, bn)
    extractor, head = split_at_backbone(model, backbone)
    check_extractor(extractor)
    check_arrays(model, x, y, sample_weight, "x")
    if isinstance(validation_data, (tuple, list)):
        check_arrays(model, *unpack(validation_data), "validation_data")
    if validation_split:
        (x, y, sample_weight), validation_data = split_validation(
            (x, y, sample_weight), validation_split, validation_data
        )
    return fit_on_features(model, extractor, head, (x, y, sample_weight), validation_data,
                           epochs=epochs, batch_size=batch_size, callbacks=callbacks,
                           shuffle=shuffle, budget=budget, directory=directory,
                           verbose=verbose, fit_kwargs=fit_kwargs)


def fit_on_features(model, extractor, head, data, validation_data, *, epochs, batch_size,
                    callbacks, shuffle, budget, directory, verbose, fit_kwargs,
                    what="the backbone's features"):
    """Run ``extractor`` once over ``data`` (``(x, y, sample_weight)``) and the validation data,
    then train ``head`` (whose layers are ``model``'s) on its outputs for ``epochs`` epochs,
    callbacks seeing ``model``: :func:`fit_frozen`'s engine, also ``fine_tune``'s for a stage
    whose frozen prefix is cached."""
    parts = {"training": batches_of(*data, batch_size, "x")}
    if validation_data is not None:
        val_size = fit_kwargs.pop("validation_batch_size", None) or batch_size
        parts["validation"] = batches_of(*unpack(validation_data), val_size, "validation_data")

    stores = []
    try:
        started = time.perf_counter()
        cached = {
            part: _extract(extractor, batches, part, stores, budget, directory, verbose, what)
            for part, batches in parts.items()
        }
        seconds = time.perf_counter() - started
        history = _fit_head(
            model, extractor, head, cached, epochs, shuffle, callbacks, verbose, fit_kwargs
        )
        history.params["feature_cache"] = cache_report(stores, seconds)
        return history
    finally:
        for store in stores:
            store.close()


def _check_compiled(model) -> None:
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ValueError(
            "fit_frozen trains the model's head with the model's own loss, metrics and "
            "optimizer: compile the model first, e.g. model.compile('adam', "
            "'sparse_categorical_crossentropy', metrics=['accuracy']). "
            f"Received: model.compiled={getattr(model, 'compiled', False)}"
        )


def _extract(extractor, batches, part, stores, budget, directory, verbose, what):
    """Run ``extractor`` over ``batches`` once; returns ``CachedData``."""
    budget -= sum(store.memory_bytes for store in stores)  # one budget for all the parts
    store = FeatureStore(budget, directory, batches.rows, batches.num_batches)
    stores.append(store)
    verbose = 1 if verbose == "auto" else verbose
    progbar = keras.utils.Progbar(batches.num_batches, verbose=verbose, unit_name="batch")
    if verbose:
        print(f"Caching {what} of the {part} data {store.where()}")
    labels, weights, batch_size = [], [], batches.batch_size
    for step, (x, y, sample_weight) in enumerate(batches.iterate(), start=1):
        store.append(extractor.predict_on_batch(x))
        labels.append(y)
        weights.append(sample_weight)
        batch_size = batch_size or int(keras.tree.flatten(x)[0].shape[0])
        progbar.update(step)
    if not labels:
        raise ValueError(f"The {part} data has no samples. Received: 0 batches")
    if batches.num_batches is None:
        progbar.update(len(labels), finalize=True)
    return CachedData(store.result(), _concat(labels), _concat(weights), batch_size)


def _concat(batches):
    if batches[0] is None:
        return None
    return keras.tree.map_structure(lambda *parts: np.concatenate(parts), *batches)


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
            check_extractor(self.extractor)
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
    batches = CachedBatches(train, train.batch_size, shuffle)
    validation = None if val is None else CachedBatches(val, val.batch_size, shuffle=False)
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
    config = compat.compile_arguments(model)
    config["optimizer"] = model.optimizer
    return config


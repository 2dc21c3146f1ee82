"""The frozen prefix of a stage, cached: ``fine_tune``'s stages that keep the bottom of the
backbone frozen train the rest of the model on the bottom's outputs, computed once per stage.

A stage that trains the top of the backbone (``fine_tune_at=100`` keeps 100 of MobileNetV2's
154 layers frozen) recomputes the frozen bottom's forward pass every epoch in ``model.fit``.
When nothing random runs there and the frozen part runs in inference mode whatever ``fit``
passes (frozen BatchNorm), its output is the same at every epoch: :func:`fit_stages` computes
it once (:func:`keras_tlft.cache.fit_on_features`: in memory, or in a file on disk past the
memory budget) and trains a model made of the model's own upper layers on it (the same
weights, optimizer and callbacks). Where that cannot apply it runs ``model.fit`` as before and
says why at ``verbose=1``.
"""

from __future__ import annotations

import contextlib
import warnings

import keras
import numpy as np

from keras_tlft import _keras_compat as compat
from keras_tlft.model.blocks import apply_unfreeze, trainable_flags_restored
from keras_tlft.model.discovery import locate_backbone
from keras_tlft.model.graph import (
    backbone_output,
    check_extractor,
    graph_ends,
    split_at_backbone,
    walk,
)

__all__ = ["fit_stages", "split_at_frozen_prefix", "stage_segments"]


def stage_segments(stages, start: int, end: int) -> list[tuple[int, int, int]]:
    """``(first_epoch, stop_epoch, stage_index)`` of each run of epochs in one stage, from
    ``start`` to ``end`` (an epoch schedule's resolved stages)."""
    from keras_tlft.schedules.plan import stage_at_epoch

    segments: list[list[int]] = []
    for epoch in range(start, end):
        index = stage_at_epoch(stages, epoch)
        if segments and segments[-1][2] == index:
            segments[-1][1] = epoch + 1
        else:
            segments.append([epoch, epoch + 1, index])
    return [tuple(s) for s in segments]


def split_at_frozen_prefix(model, container):
    """``(extractor, rest, cut_layer)``: ``model`` cut inside its nested backbone ``container``
    as high as its current ``trainable`` flags allow, where one tensor crosses the cut.

    ``extractor`` maps the model's inputs to that tensor; ``rest`` maps it to the model's
    outputs with the model's own layers. Raises ``ValueError`` (the reason) when no such cut
    leaves anything to cache.
    """
    if not isinstance(container, keras.Model) or not getattr(container, "outputs", None):
        raise ValueError("the backbone is not a nested functional model")
    layers = container.layers
    produced, last_use = {}, {}
    for i, layer in enumerate(layers):
        if len(getattr(layer, "_inbound_nodes", ())) != 1:
            raise ValueError(f"layer {layer.name!r} is called more than once in the backbone")
        _, inputs = compat.producer(layer.output)
        for tensor in inputs:
            last_use[id(tensor)] = max(last_use.get(id(tensor), -1), i)
        produced[id(layer.output)] = (i, layer.output)
    last_use[id(container.output)] = len(layers)
    frozen = next((i for i, layer in enumerate(layers) if not _cacheable(layer)), len(layers))
    cut = None
    for k in range(frozen, 1, -1):  # the highest cut with exactly one tensor crossing it
        crossing = [t for tid, (i, t) in produced.items() if i < k <= last_use.get(tid, -1)]
        if len(crossing) == 1:
            cut = k, crossing[0]
            break
    if cut is None or cut[0] >= len(layers):
        raise ValueError("no frozen layer above the backbone's input can be cut at "
                         "(the backbone trains from its first layers)")
    k, tensor = cut
    lower = keras.Model(container.input, tensor, name=f"{container.name}_prefix")
    upper = keras.Model(tensor, container.output, name=f"{container.name}_rest")
    inputs, _ = graph_ends(model)
    _, container_inputs = compat.producer(backbone_output(model, container))
    if len(container_inputs) != 1:
        raise ValueError("the backbone is called on more than one tensor")
    extractor = keras.Model(inputs, lower(container_inputs[0]), name=f"{model.name}_prefix")
    check_extractor(extractor)
    _, head = split_at_backbone(model, container)
    features = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype)
    rest = keras.Model(features, head(upper(features)), name=f"{model.name}_rest")
    return extractor, rest, layers[k]


def _cacheable(layer) -> bool:
    """Whether ``layer`` computes the same thing at every step of ``fit``: no trainable
    weight, no random draw, no BatchNorm in training mode (checked inside it too)."""
    from keras_tlft.model.graph import is_random, runs_in_training_mode

    if layer.trainable_weights:
        return False
    inner = [layer] + [sub for _, sub in walk(layer)]
    return not any(is_random(sub) or runs_in_training_mode(sub) for sub in inner)


def _arrays(x, y, validation_data) -> str | None:
    """Why the data cannot be cached as arrays (``None`` when it can)."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        return "the data is not NumPy arrays (a dataset or generator may be random)"
    if validation_data is not None and not (
            isinstance(validation_data, tuple)
            and all(isinstance(v, np.ndarray) for v in validation_data)):
        return "the validation data is not a tuple of NumPy arrays"
    return None


def fit_stages(model, x, y, unfreeze, callbacks, start: int, end: int, *, batch_size,
               validation_data, verbose, cache="auto", max_memory_bytes=None,
               say=None) -> list:
    """Train ``model`` from epoch ``start`` to ``end`` under the ``ProgressiveUnfreeze``
    ``unfreeze``, each stage that lasts more than one epoch on its frozen prefix's cached
    outputs where that gives what ``model.fit`` gives, the others in ``model.fit``.

    Returns the ``History`` of each part, in order.
    """
    from keras_tlft.training.cache import fit_on_features
    from keras_tlft.training.feature_store import cache_policy, remove_stale_feature_files

    say = say or (lambda message: None)
    fit_args = dict(batch_size=batch_size, validation_data=validation_data, verbose=verbose)

    def plain(a, b):
        with _later_stages_unsaid(b < end):
            return model.fit(x, y, epochs=b, initial_epoch=a, callbacks=[unfreeze, *callbacks],
                             **fit_args)

    plans = _plan(model, x, y, unfreeze, start, end, validation_data)
    parts, pending = [], None
    for a, b, index, split, reason in plans:
        if split is None:
            if reason:
                say(f"fine_tune: stage {index} (epochs {a}-{b - 1}) in model.fit: {reason}")
            pending = (pending[0] if pending else a, b)
            continue
        if pending:
            parts.append(plain(*pending))
            pending = None
        extractor, rest, cut = split
        say(f"fine_tune: stage {index} (epochs {a}-{b - 1}) on the cached outputs of the "
            f"frozen layers below {cut.name!r}")
        budget, directory = cache_policy(cache, max_memory_bytes)
        if directory is not None:
            remove_stale_feature_files(directory)
        with _later_stages_unsaid(b < end):
            parts.append(fit_on_features(
                model, extractor, rest, (x, y, None), validation_data, epochs=b,
                batch_size=batch_size, callbacks=[unfreeze, *callbacks], shuffle=True,
                budget=budget, directory=directory, verbose=verbose,
                fit_kwargs={"initial_epoch": a}, what="the frozen layers' outputs"))
    if pending:
        parts.append(plain(*pending))
    return parts


@contextlib.contextmanager
def _later_stages_unsaid(unsaid: bool):
    """A part that ends before the run does: its stages after it run in the next part, so the
    callback's warning that they never run would be wrong (the last part still says it)."""
    with warnings.catch_warnings():
        if unsaid:
            warnings.filterwarnings("ignore", message=r"ProgressiveUnfreeze: .* begin after the "
                                    r"last epoch of this fit")
        yield


def _plan(model, x, y, unfreeze, start, end, validation_data):
    """``(first, stop, stage, split or None, reason)`` per run of epochs in one stage."""
    schedule = unfreeze.schedule
    if schedule.trigger == "plateau":
        return [(start, end, 0, None, "a plateau schedule's stages end when a metric says")]
    found = locate_backbone(model, unfreeze.backbone, unfreeze.blocks)
    stages = schedule.resolve(len(found.blocks))
    why_not = _arrays(x, y, validation_data)
    if why_not is None and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy() or model.distribute_strategy.num_replicas_in_sync > 1:
            why_not = "a distribution strategy is in use"
    plans = []
    for a, b, index in stage_segments(stages, start, end):
        split, reason = None, why_not
        if reason is None and b - a < 2:
            reason = ""  # one epoch: caching costs what it saves; nothing to say
        if reason is None:
            with trainable_flags_restored(found.layers, found.container):
                apply_unfreeze(found.layers, found.blocks, stages[index].unfreeze,
                               schedule.bn, found.container)
                try:
                    split = split_at_frozen_prefix(model, found.container)
                except ValueError as exc:
                    reason = f"its frozen part cannot be cached ({exc})"
        plans.append((a, b, index, split, reason))
    return plans

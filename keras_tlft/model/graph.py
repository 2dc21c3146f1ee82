"""The model cut in two at the backbone's output, and what must hold of the part before it for
its output to be cached (:func:`check_cacheable`)."""

from __future__ import annotations

import keras

from keras_tlft import _keras_compat as compat
from keras_tlft.model.discovery import output_layer

__all__ = ["check_cacheable", "split_at_backbone"]

SHOWN = 3  # offending layers named in a refusal message


def check_cacheable(model, backbone=None) -> None:
    """Raise ``ValueError`` if caching the backbone's features would change ``model.fit``.

    Caching assumes that everything up to the backbone's output computes the same thing at
    every epoch of ``model.fit``. Keras 3 passes ``fit``'s ``training=True`` down into nested
    models even where the model was called with ``training=False``, so three things break it:

    - layers that draw random numbers (augmentation, ``Dropout``, ``GaussianNoise``: any
      layer with a seed generator) before or inside the backbone, unless they run in inference
      mode whatever ``fit`` passes (inside a backbone under ``bn="affine"``);
    - trainable weights before the backbone's output (a backbone that is not frozen);
    - ``BatchNormalization`` layers there that are trainable: ``model.fit`` runs them in
      training mode (batch statistics, moving averages updated).

    Args:
        model: a functional or Sequential model.
        backbone: the backbone whose output would be cached, found as ``ProgressiveUnfreeze``
            finds it (see :func:`keras_tlft.discovery.find_backbone`): ``None`` (the layer
            ``"backbone"``, or the only nested model with weights), a layer name or a layer.

    Example:
    ```python
    model = tlft.build_model("mobilenet_v2", 10, augmentation="default", weights=None)
    tlft.check_cacheable(model)  # ValueError: ... random layers before or inside the backbone
    ```
    """
    check_extractor(extractor_to(model, backbone_layer(model, backbone)))


def check_extractor(extractor) -> None:
    """``check_cacheable`` on the part of the model up to the backbone's output."""
    layers = list(walk(extractor))
    random = [path for path, layer in layers if is_random(layer)]
    if random:
        raise ValueError(
            "Cannot cache the backbone's features: layers before or inside the backbone draw "
            "random numbers in model.fit (augmentation, dropout, noise: Keras passes fit's "
            "training=True into nested models, even into a backbone called with "
            "training=False), and a cache would freeze one draw for every epoch. Remove them "
            f"from the model or train with model.fit. Received: random layers={shown(random)}"
        )
    trainable = [v.path for v in extractor.trainable_weights]
    if trainable:
        raise ValueError(
            "Cannot cache the backbone's features: the backbone is not frozen; model.fit "
            f"would train {len(trainable)} weights up to its output, so the features would "
            "change every step. Freeze it (`trainable = False` on the backbone, or on the "
            "layers that hold these weights) or train with model.fit. "
            f"Received: trainable weights={shown(trainable)}"
        )
    batchnorm = [path for path, layer in layers if runs_in_training_mode(layer)]
    if batchnorm:
        raise ValueError(
            "Cannot cache the backbone's features: BatchNormalization layers before the "
            "backbone's output are trainable, so model.fit runs them in training mode (batch "
            "statistics, moving averages updated). Set `trainable = False` on them or train "
            f"with model.fit. Received: trainable BatchNormalization={shown(batchnorm)}"
        )


def split_at_backbone(model, backbone=None):
    """``(extractor, head)``: ``model`` cut at the backbone's output, sharing every layer.

    ``extractor`` maps the model's inputs to the backbone's output (with whatever runs before
    it); ``head`` maps that output to the model's outputs.
    """
    layer = backbone_layer(model, backbone)
    extractor = extractor_to(model, layer)
    _, outputs = graph_ends(model)
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


def extractor_to(model, layer):
    """The part of ``model`` from its inputs to ``layer``'s output."""
    inputs, _ = graph_ends(model)
    return keras.Model(inputs, backbone_output(model, layer), name=f"{model.name}_features")


def graph_ends(model):
    """The model's symbolic inputs and outputs, in their structure."""
    if isinstance(model, keras.Sequential):
        return model.inputs[0], model.outputs[0]
    return model.input, model.output


def backbone_layer(model, backbone=None):
    """The layer whose output is the backbone's features (see :mod:`keras_tlft.discovery`)."""
    if not getattr(model, "outputs", None):
        raise ValueError(
            "fit_frozen needs a functional or Sequential model built on a keras.Input, whose "
            "graph shows what runs before and after the backbone. "
            f"Received: model={type(model).__name__}"
        )
    return output_layer(model, backbone)


def backbone_output(model, layer):
    """The output tensor of ``layer``'s one call in ``model``'s graph."""
    found, seen, stack = [], set(), list(model.outputs)
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, inputs = compat.producer(tensor)
        if operation is layer:
            found.append(tensor)
            continue
        stack.extend(inputs)
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


def walk(layer, prefix=""):
    """``(path, sublayer)`` for every layer inside ``layer``, depth first."""
    for child in compat.sublayers(layer, recursive=False):
        path = f"{prefix}{child.name}"
        yield path, child
        yield from walk(child, f"{path}/")


def is_random(layer) -> bool:
    if getattr(layer, "rate", None) == 0:
        return False  # Dropout(0) is the identity
    # In inference mode whatever fit passes (bn="affine"), Dropout and noise draw nothing.
    return compat.draws_random_numbers(layer) and compat.follows_training(layer)


def runs_in_training_mode(layer) -> bool:
    return (isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
            and compat.follows_training(layer))


def shown(items) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{items[:SHOWN]}{more}"


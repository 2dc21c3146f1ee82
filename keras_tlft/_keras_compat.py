"""Every use of Keras's private API in keras-tlft, in one place.

Each function says why it needs the private API, the public alternative when there is one, and the
Keras versions it was checked on. The rest of the package reads as if only public API existed;
when Keras changes, this file (and the tests that exercise it) is where to look.
"""

from __future__ import annotations

__all__ = [
    "compile_arguments",
    "draws_random_numbers",
    "producer",
    "sublayers",
]


def sublayers(layer, include_self: bool = False, recursive: bool = True) -> list:
    """Every layer inside ``layer`` (depth first, each once), optionally ``layer`` itself.

    Why: ``Layer._flatten_layers`` is how Keras itself walks a layer tree; it also finds layers
    kept in attributes of a composite layer (keras-hub's HGNetV2 stages), which ``Model.layers``
    does not list. Public alternative: ``Model.layers`` (top level only, models only).
    Checked: Keras 3.15.1.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def producer(tensor) -> tuple:
    """``(operation, input_tensors)``: the operation whose call in a functional graph produced
    the symbolic ``tensor``, and the tensors it was called on.

    Why: walking a graph backwards from its outputs to find every call of one layer (and to tell
    one call from several) needs the node that made each tensor, ``tensor._keras_history`` and
    ``operation._inbound_nodes``; Keras's ``Function`` walks them the same way. Public
    alternative: ``layer.output`` when the layer is called exactly once, which cannot tell a
    layer called twice or not on the path at all.
    Checked: Keras 3.15.1.
    """
    operation, node_index, _ = tensor._keras_history
    return operation, list(operation._inbound_nodes[node_index].input_tensors)


def draws_random_numbers(layer) -> bool:
    """Whether ``layer`` owns a seed generator, i.e. draws random numbers when it runs
    (augmentation, ``Dropout``, ``GaussianNoise``, any custom layer with a ``SeedGenerator``).

    Why: Keras keeps a layer's seed generators in ``Layer._seed_generators`` and offers no public
    way to ask. Public alternative: none (checking known layer classes misses custom ones).
    Checked: Keras 3.15.1.
    """
    return bool(getattr(layer, "_seed_generators", None))


def compile_arguments(model) -> dict:
    """The arguments ``model.compile`` was called with, as the objects passed (loss functions,
    metric objects), for compiling a second model that trains the same way.

    Why: ``Model._compile_config.config`` keeps the arguments themselves. Public alternative:
    ``model.get_compile_config()``, which returns them serialized; deserializing re-creates each
    object and fails for a loss or metric that is a plain function not registered with
    ``keras.saving.register_keras_serializable``, which ``compile`` itself accepts.
    Checked: Keras 3.15.1.
    """
    return dict(model._compile_config.config)

"""Backbone discovery: where a model's backbone is, and its blocks.

One finder for :class:`~keras_tlft.ProgressiveUnfreeze` and :func:`~keras_tlft.fit_frozen` alike:
the layer named ``"backbone"`` (as :func:`~keras_tlft.build_model` makes it), else the only nested
model with weights, else what ``backbone=`` names (a nested model, the last layer of a backbone
whose layers sit directly in the model, or the base model whose layers the model reuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from keras_tlft import _keras_compat as compat
from keras_tlft.blocks import Block, cut_into_blocks, derive_blocks
from keras_tlft.spec import (
    BACKBONE_LAYER,
    HEAD_LAYER,
    SPEC_ATTRIBUTE,
    BlockRule,
    closest_names,
    did_you_mean,
)

__all__ = [
    "Backbone",
    "blocks_argument",
    "find_backbone",
    "locate_backbone",
    "locator_config",
    "resolve_blocks",
]


@dataclass
class Backbone:
    """Where a model's backbone is: its ``layers`` (in order), the nested model holding them
    (``container``; ``None`` when they sit directly in the model) and its blocks."""

    name: str
    layers: list
    container: Any
    blocks: list[Block]
    blocks_source: str


def nested_models(model) -> list:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, keras.Model) and layer.weights and layer.name != HEAD_LAYER
    ]


def candidates_message(model) -> str:
    nested = nested_models(model)
    if nested:
        rows = [f"{m.name} ({type(m).__name__}, {m.count_params():,} params)" for m in nested]
        return "nested models: " + ", ".join(rows)
    rows = [layer.name for layer in model.layers if layer.weights]
    shown = ", ".join(rows[:12]) + (", ..." if len(rows) > 12 else "")
    return (
        f"layers with weights: {shown or 'none'} (for a flat model, pass the last backbone "
        "layer's name, or the base model object)"
    )


def find_backbone(model, backbone=None) -> tuple[str, list, Any]:
    """``(name, layers, container)`` of ``model``'s backbone.

    ``backbone`` is ``None`` (a layer named ``"backbone"``, as :func:`keras_tlft.build_model`
    makes, or else the only nested model with weights), the name of a nested model, the name of
    the last layer of a backbone whose layers sit directly in ``model``, or a layer object (a
    nested model, or the base model whose layers ``model`` reuses, as in
    ``Model(base.input, head(base.output))``).
    """
    if backbone is None:
        nested = nested_models(model)
        named = [m for m in nested if m.name == BACKBONE_LAYER]
        if named or len(nested) == 1:
            found = (named or nested)[0]
            return found.name, list(found.layers), found
        raise ValueError(
            f"Cannot find the backbone of model {model.name!r}: "
            f"{'several' if nested else 'no'} nested models with weights. Pass backbone= a "
            f"layer name or the layer object; candidates: {candidates_message(model)}. "
            "Received: backbone=None"
        )
    if isinstance(backbone, str):
        names = [layer.name for layer in model.layers]
        if backbone not in names:
            hint = did_you_mean(closest_names(backbone, names))
            raise ValueError(
                f"No layer named {backbone!r} in model {model.name!r}.{hint} Candidates: "
                f"{candidates_message(model)}. Received: backbone={backbone!r}"
            )
        backbone = model.get_layer(backbone)
    if not isinstance(backbone, keras.layers.Layer):
        raise ValueError(
            "backbone must be None, a layer name or a Keras layer. "
            f"Received: backbone={backbone!r}"
        )
    top = model.layers
    if any(layer is backbone for layer in top):
        if isinstance(backbone, keras.Model):
            return backbone.name, list(backbone.layers), backbone
        index = next(i for i, layer in enumerate(top) if layer is backbone)
        return backbone.name, list(top[: index + 1]), None
    if isinstance(backbone, keras.Model):
        ids = {id(layer) for layer in compat.sublayers(model)}
        if all(id(layer) in ids for layer in backbone.layers):
            return backbone.name, list(backbone.layers), None
    raise ValueError(
        f"The backbone {backbone.name!r} is not part of model {model.name!r}: it is neither one "
        f"of its layers nor a model whose layers it uses. Candidates: "
        f"{candidates_message(model)}. Received: backbone={backbone.name!r}"
    )


def resolve_blocks(name: str, layers: Sequence, container, model, blocks=None):
    """The blocks of a backbone and where they come from (``"spec"`` or ``"derived"``)."""
    from keras_tlft.registry import get_backbone

    if blocks is not None:
        rules = get_backbone(blocks).blocks if isinstance(blocks, str) else tuple(blocks)
        if not all(isinstance(r, BlockRule) for r in rules):
            raise ValueError(
                "blocks must be None, a registered backbone name or a list of BlockRule. "
                f"Received: blocks={blocks!r}"
            )
        return cut_into_blocks(layers, rules), "given"
    spec = getattr(container, SPEC_ATTRIBUTE, None) or getattr(model, SPEC_ATTRIBUTE, None)
    if spec is None and container is not None:
        try:
            spec = get_backbone(name)
        except ValueError:
            spec = None
    if spec is not None and spec.blocks:
        try:
            return cut_into_blocks(layers, spec.blocks), f"spec {spec.key}"
        except ValueError:
            pass
    return derive_blocks(layers), "derived"


def blocks_argument(blocks):
    if blocks is None or isinstance(blocks, str):
        return blocks
    if isinstance(blocks, Sequence) and not isinstance(blocks, (bytes, bytearray)):
        rules = []
        for rule in blocks:
            if isinstance(rule, BlockRule):
                rules.append(rule)
            elif isinstance(rule, Sequence) and not isinstance(rule, str) and 2 <= len(rule) <= 3:
                rules.append(BlockRule(*rule))
            else:
                break
        else:
            return tuple(rules)
    raise ValueError(
        "blocks must be None (from the registry or derived), a registered backbone name, or a "
        f"list of BlockRule / (name, pattern[, after]). Received: blocks={blocks!r}"
    )


def locate_backbone(model, backbone=None, blocks=None) -> Backbone:
    """The :class:`Backbone` of ``model``: :func:`find_backbone`, then :func:`resolve_blocks`."""
    name, layers, container = find_backbone(model, backbone)
    found, source = resolve_blocks(name, layers, container, model, blocks)
    return Backbone(name, layers, container, found, source)


def output_layer(model, backbone=None):
    """The layer whose output is the backbone's features: the nested backbone model, or the
    backbone's last layer when its layers sit directly in ``model``."""
    name, layers, container = find_backbone(model, backbone)
    return container if container is not None else layers[-1]


def locator_config(backbone, blocks) -> dict:
    """``{"backbone", "blocks"}`` as plain JSON-able values, for a callback's ``get_config``:
    a layer by its name, block rules as ``[name, pattern, after]`` lists."""
    if isinstance(backbone, keras.layers.Layer):
        backbone = backbone.name
    if isinstance(blocks, tuple):
        blocks = [[r.name, r.pattern, r.after] for r in blocks]
    return {"backbone": backbone, "blocks": blocks}

"""Backbone discovery: where a model's backbone is, and its blocks.

One finder for :class:`~keras_tlft.ProgressiveUnfreeze` and :func:`~keras_tlft.fit_frozen` alike:
the layer named ``"backbone"`` (as :func:`~keras_tlft.build_model` makes it), else the only nested
model with weights, else what ``backbone=`` names (a nested model, the last layer of a backbone
whose layers sit directly in the model, or the base model whose layers the model reuses).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from keras_tlft import _keras_compat as compat
from keras_tlft.backbones.spec import (
    BACKBONE_LAYER,
    HEAD_LAYER,
    SPEC_ATTRIBUTE,
    BlockRule,
    closest_names,
    did_you_mean,
)
from keras_tlft.model.blocks import (
    Block,
    block_pattern,
    count_weights,
    cut_into_blocks,
    derive_blocks,
)

__all__ = [
    "Backbone",
    "blocks_argument",
    "blocks_from_callable",
    "describe_source",
    "find_backbone",
    "locate_backbone",
    "locator_config",
    "recognise_architecture",
    "resolve_blocks",
]


@dataclass
class Backbone:
    """Where a model's backbone is: its ``layers`` (in order), the nested model holding them
    (``container``; ``None`` when they sit directly in the model), its blocks, how they were
    found (``blocks_source``: ``"build_model"``, ``"structure"``, ``"given"`` or ``"derived"``,
    see :func:`resolve_blocks`) and the spec whose rules cut them (``blocks_spec``)."""

    name: str
    layers: list
    container: Any
    blocks: list[Block]
    blocks_source: str
    blocks_spec: Any = None


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
    """The blocks of a backbone and how they were found: ``(blocks, source, spec)``.

    ``source`` is ``"build_model"`` (the spec :func:`keras_tlft.build_model` attached, a fast
    path that a ``.keras`` file does not keep), ``"structure"`` (the registered architecture
    whose block rules fit the layers, see :func:`recognise_architecture`), ``"given"``
    (``blocks=``) or ``"derived"`` (from the layer names); ``spec`` is the spec whose rules cut
    the blocks, when one did.
    """
    from keras_tlft.backbones.registry import get_backbone

    if blocks is not None:
        if callable(blocks):
            return blocks_from_callable(layers, blocks), "given", None
        spec = get_backbone(blocks) if isinstance(blocks, str) else None
        rules = spec.blocks if spec is not None else tuple(blocks)
        if not all(isinstance(r, BlockRule) for r in rules):
            raise ValueError(
                "blocks must be None, a registered backbone name, a list of BlockRule or a "
                f"callable. Received: blocks={blocks!r}"
            )
        return cut_into_blocks(layers, rules), "given", spec
    spec = getattr(container, SPEC_ATTRIBUTE, None) or getattr(model, SPEC_ATTRIBUTE, None)
    if spec is not None and spec.blocks:
        try:
            return cut_into_blocks(layers, spec.blocks), "build_model", spec
        except ValueError:
            pass
    recognised = recognise_architecture(layers)
    if recognised is not None:
        spec, found = recognised
        return found, "structure", spec
    return derive_blocks(layers), "derived", None


def fitting_blocks(layers: Sequence, rules: Sequence[BlockRule]) -> list[Block] | None:
    """The blocks ``rules`` cut ``layers`` into when they describe this structure, else ``None``.

    Stricter than :func:`~keras_tlft.blocks.cut_into_blocks` (which any one rule fits): there
    must be at least two rules, every block must be found, in order, and the first rule's
    pattern, which only documents where the first block starts, must match one of its layers.
    """
    if len(rules) < 2:
        return None
    try:
        found = cut_into_blocks(layers, rules)
    except ValueError:
        return None
    first = re.compile(rules[0].pattern)
    if not any(first.match(layer.name) for layer in layers[: found[1].first]):
        return None
    return found


def recognise_architecture(layers: Sequence, specs=None):
    """``(spec, blocks)`` of the registered architecture whose block rules fit ``layers`` (see
    :func:`fitting_blocks`), whatever the model's name, input size or width; ``None`` if none
    fits.

    When the rules of several architectures fit, a spec whose parameter count equals the
    layers' names the architecture (keras-hub's MobileNetV3-Large rules also fit its Small
    models, cutting one layer more off); failing that (another width or input size), the cut
    into the most blocks wins (the rules of MobileNetV3-Small also fit MobileNetV3-Large, whose
    later blocks they merge into one).
    """
    from keras_tlft.backbones.registry import get_registry

    specs = list(get_registry()) if specs is None else list(specs)
    by_rules: dict[tuple, list] = {}
    for spec in specs:
        if spec.blocks:
            by_rules.setdefault(tuple(spec.blocks), []).append(spec)
    params = count_weights(v for layer in layers for v in layer.weights)
    best = None
    for rules, owners in by_rules.items():
        found = fitting_blocks(layers, rules)
        if found is None:
            continue
        exact = [s for s in owners if s.params == params]
        rank = (bool(exact), len(found))
        if best is None or rank > best[0]:
            best = (rank, (exact or owners)[0], found)
    return None if best is None else (best[1], best[2])


def blocks_from_callable(layers: Sequence, block_of) -> list[Block]:
    """Blocks from ``block_of(layer) -> block name``: consecutive layers of the same name form a
    block; a layer for which it returns ``None`` joins the block before it."""
    starts: list[tuple[str, int]] = []
    for i, layer in enumerate(layers):
        label = block_of(layer)
        if label is None or (starts and starts[-1][0] == label):
            continue
        if not isinstance(label, str):
            raise TypeError(
                "A blocks= callable must return a block name (str) or None for each layer. "
                f"Received: {label!r} for layer {layer.name!r}"
            )
        if any(label == seen for seen, _ in starts):
            raise ValueError(
                f"Block {label!r} is not contiguous: layer {layer.name!r} (index {i}) comes back "
                f"to it after block {starts[-1][0]!r}. A blocks= callable must name runs of "
                f"consecutive layers. Received: {label!r} for layer {layer.name!r}"
            )
        starts.append((label, i))
    if not starts:
        return [Block("all", 0, len(layers) - 1)]
    starts[0] = (starts[0][0], 0)
    ends = [s - 1 for _, s in starts[1:]] + [len(layers) - 1]
    return [Block(label, s, e) for (label, s), e in zip(starts, ends)]


def describe_source(backbone: Backbone) -> str:
    """How the blocks were found, for people: ``verbose=1`` prints it."""
    key = backbone.blocks_spec.key if backbone.blocks_spec is not None else None
    if backbone.blocks_source == "build_model":
        return f"spec {key} from build_model"
    if backbone.blocks_source == "structure":
        return f"recognised as {key} by structure"
    if backbone.blocks_source == "given":
        return f"given: rules of {key}" if key else "given"
    return "derived from layer names"


def blocks_argument(blocks):
    """``blocks=`` of a callback, checked: ``None``, a name, rules or a callable (also as
    :func:`locator_config` writes one: ``{"callable": "module:qualname"}``)."""
    if isinstance(blocks, dict) and isinstance(blocks.get("callable"), str):
        module, _, qualname = blocks["callable"].partition(":")
        value = importlib.import_module(module)
        for part in qualname.split("."):
            value = getattr(value, part)
        blocks = value
    if blocks is None or isinstance(blocks, str) or callable(blocks):
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
            block_pattern(rules[-1])  # a bad pattern is refused here, not at the first fit
        else:
            return tuple(rules)
    raise ValueError(
        "blocks must be None (from the registry or derived), a registered backbone name, a "
        "list of BlockRule / (name, pattern[, after]), or a callable mapping a layer to its "
        f"block's name. Received: blocks={blocks!r}"
    )


def locate_backbone(model, backbone=None, blocks=None) -> Backbone:
    """The :class:`Backbone` of ``model``: :func:`find_backbone`, then :func:`resolve_blocks`."""
    name, layers, container = find_backbone(model, backbone)
    found, source, spec = resolve_blocks(name, layers, container, model, blocks)
    return Backbone(name, layers, container, found, source, spec)


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
    elif callable(blocks):
        blocks = {"callable": f"{blocks.__module__}:{blocks.__qualname__}"}
    return {"backbone": backbone, "blocks": blocks}

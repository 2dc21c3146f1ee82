"""Unfreeze specs ("none", k, "all", "from:...") and cutting a backbone into blocks.

One module answers "what does this unfreeze state train" for the CLI (``inspect --unfreeze``) and
for the :class:`~keras_tlft.ProgressiveUnfreeze` callback alike.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from keras_tlft import _keras_compat as compat
from keras_tlft.backbones.spec import BlockRule, closest_names, did_you_mean
from keras_tlft.model.batchnorm import bn_policy, set_backbone_inference

UNFREEZE_HELP = (
    "'none', 'all', an integer k (the top k blocks) or 'from:INDEX|LAYER_NAME' "
    "(that layer and every later one)"
)


@dataclass(frozen=True)
class Block:
    """A contiguous run of a backbone's layers, ``layers[first:last + 1]``."""

    name: str
    first: int
    last: int

    def indices(self) -> range:
        return range(self.first, self.last + 1)


@dataclass(frozen=True)
class UnfreezeState:
    """A parsed unfreeze spec. ``kind`` is ``none``, ``all``, ``top`` (value: k) or ``from``
    (value: a layer index or name)."""

    kind: str
    value: Any = None

    def __str__(self) -> str:
        if self.kind in ("none", "all"):
            return self.kind
        if self.kind == "top":
            return str(self.value)
        return f"from:{self.value}"

    def to_json(self):
        """The spec as a schedule writes it: ``"none"``, ``"all"``, ``k`` or ``"from:..."``."""
        return self.value if self.kind == "top" else str(self)


def parse_unfreeze(spec: Any, name: str = "unfreeze") -> UnfreezeState:
    """Parse an unfreeze spec: ``"none"``, ``"all"``, an integer k or ``"from:INDEX|NAME"``."""
    if isinstance(spec, UnfreezeState):
        return spec
    if isinstance(spec, bool):
        raise TypeError(f"Invalid {name}: expected {UNFREEZE_HELP}. Received: {name}={spec!r}")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(
                f"Invalid {name}: the number of top blocks to unfreeze cannot be negative; "
                f"expected {UNFREEZE_HELP}. Received: {name}={spec!r}"
            )
        return UnfreezeState("top", spec) if spec else UnfreezeState("none")
    if not isinstance(spec, str):
        raise TypeError(f"Invalid {name}: expected {UNFREEZE_HELP}. Received: {name}={spec!r}")
    text = spec.strip()
    low = text.lower()
    if low in ("none", "all"):
        return UnfreezeState(low)
    if re.fullmatch(r"\d+", text):
        return parse_unfreeze(int(text), name)
    if low.startswith("from:") and text[5:].strip():
        target = text[5:].strip()
        if re.fullmatch(r"-?\d+", target):
            return UnfreezeState("from", int(target))
        return UnfreezeState("from", target)
    raise ValueError(
        f"Invalid {name} spec {spec!r}: expected {UNFREEZE_HELP}. Received: {name}={spec!r}"
    )


def block_pattern(rule: BlockRule) -> re.Pattern:
    """``rule``'s pattern, compiled; a ``ValueError`` naming it when it is no regular
    expression (a block rule's pattern is matched with ``re.match`` against each layer name)."""
    problem = "is not a string"
    if isinstance(rule.pattern, str):
        try:
            return re.compile(rule.pattern)
        except re.error as exc:
            problem = f"is not a valid regular expression ({exc})"
    raise ValueError(
        f"The pattern {rule.pattern!r} of block {rule.name!r} {problem}. Expected a regular "
        "expression matched (re.match) against each layer name, such as '^block3_' (escape a "
        "literal '[' or '(' with a backslash). "
        f"Received: BlockRule(name={rule.name!r}, pattern={rule.pattern!r}, after={rule.after!r})"
    )


def cut_into_blocks(layers: Sequence, rules: Sequence[BlockRule]) -> list[Block]:
    """Cut ``layers`` into the blocks that ``rules`` describe (see :class:`BlockRule`).

    The first block always starts at layer 0 (so the input and stem belong to it) and the last
    runs to the end, so the blocks cover every layer, in order, without overlap.
    """
    if not rules:
        return derive_blocks(layers)
    names = [layer.name for layer in layers]
    patterns = [block_pattern(rule) for rule in rules]  # the first one's too: all are checked
    starts: list[int] = []
    for i, (rule, rx) in enumerate(zip(rules, patterns)):
        if i == 0:
            starts.append(0)
            continue
        search_from = starts[-1] + (0 if rule.after else 1)
        found = next((j for j in range(search_from, len(names)) if rx.match(names[j])), None)
        start = None if found is None else found + (1 if rule.after else 0)
        if start is None or start >= len(names) or start <= starts[-1]:
            raise ValueError(
                f"Block {rule.name!r} has no start: no layer after index {starts[-1]} matches "
                f"{rule.pattern!r}. The block rules do not fit this model: fix them, or leave "
                f"them out (BackboneSpec(blocks=()), the default) to derive blocks from the "
                f"layer names."
            )
        starts.append(start)
    ends = [s - 1 for s in starts[1:]] + [len(names) - 1]
    return [Block(rule.name, s, e) for rule, s, e in zip(rules, starts, ends)]


_PREFIX = re.compile(r"([A-Za-z]+\d+)(?:_|$)")


def derive_blocks(layers: Sequence) -> list[Block]:
    """Blocks for a backbone the registry does not know.

    Layers are grouped by a numbered name prefix (``block3_conv1`` -> ``block3``,
    ``conv4_block2_out`` -> ``conv4``) when that gives at least two groups; otherwise every layer
    with weights starts a block of its own. Layers without a prefix join the block before them.
    """
    names = [layer.name for layer in layers]
    groups: list[tuple[str, int]] = []
    for i, name in enumerate(names):
        m = _PREFIX.match(name)
        if m and (not groups or groups[-1][0] != m.group(1)) and m.group(1) not in dict(groups):
            groups.append((m.group(1), i))
    if len(groups) < 2:
        groups = [
            (names[i], i) for i, layer in enumerate(layers) if getattr(layer, "weights", None)
        ]
    if not groups:
        return [Block("all", 0, len(names) - 1)]
    groups[0] = (groups[0][0], 0)
    ends = [s - 1 for _, s in groups[1:]] + [len(names) - 1]
    return [Block(name, s, e) for (name, s), e in zip(groups, ends)]


def unfrozen_layer_indices(layers: Sequence, blocks: Sequence[Block], state: Any) -> range:
    """Indices of the layers that ``state`` unfreezes: always a tail ``layers[start:]``."""
    state = parse_unfreeze(state)
    n = len(layers)
    if state.kind == "none":
        return range(n, n)
    if state.kind == "all":
        return range(n)
    if state.kind == "top":
        if state.value > len(blocks):
            raise ValueError(
                f"Cannot unfreeze the top {state.value} blocks: this backbone has {len(blocks)} "
                f"blocks ({', '.join(b.name for b in blocks)}). Use 'all' or k <= {len(blocks)}. "
                f"Received: unfreeze={state.value}"
            )
        return range(blocks[-state.value].first, n)
    target = state.value
    if isinstance(target, int):
        if not -n <= target < n:
            raise ValueError(
                f"Layer index {target} is out of range: the backbone has {n} layers "
                f"(0 to {n - 1}). Received: unfreeze='from:{target}'"
            )
        return range(target % n, n)
    names = [layer.name for layer in layers]
    if target not in names:
        hint = did_you_mean(closest_names(target, names))
        raise ValueError(
            f"No layer named {target!r} in the backbone.{hint} Run `keras-tlft inspect NAME "
            f"--layers` to list them. Received: unfreeze='from:{target}'"
        )
    return range(names.index(target), n)


def is_batchnorm(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.BatchNormalization)


def apply_unfreeze(
    layers: Sequence,
    blocks: Sequence[Block],
    state: Any,
    bn: str = "frozen",
    container=None,
    *,
    train_bn: bool | None = None,
) -> range:
    """Set ``trainable`` on every layer for ``state`` and apply the BatchNorm policy ``bn``
    (:mod:`keras_tlft.batchnorm`); returns the unfrozen indices.

    BatchNormalization layers of unfrozen blocks stay frozen under ``"frozen"`` (the Keras
    transfer-learning guide's rule: their moving statistics would be overwritten by the new
    data's) and train under ``"affine"`` and ``"train"``, also those nested inside a composite
    layer (keras-hub's HGNetV2 stages, keras-cv's CSPDarkNet and EfficientNetV2 blocks), which
    the unfrozen layer's own ``trainable`` setter would otherwise turn on with it. Under
    ``"affine"`` every backbone layer runs in inference mode, so BatchNorm normalises with its
    moving statistics and never updates them. ``container`` is the nested backbone model, when
    there is one: it is made trainable first, so that its layers' own flags decide.
    ``train_bn`` is the old spelling of ``bn="train"``.
    """
    if isinstance(bn, bool):  # the old positional train_bn
        bn, train_bn = "frozen", bn
    bn = bn_policy(bn, train_bn)
    train = bn != "frozen"
    unfrozen = unfrozen_layer_indices(layers, blocks, state)
    if container is not None:
        container.trainable = bool(len(unfrozen))
    for i, layer in enumerate(layers):
        wanted = i in unfrozen and (train or not is_batchnorm(layer))
        if layer.trainable != wanted:
            layer.trainable = wanted
        if wanted:
            # Set even when unchanged: on TensorFlow, Keras skips a setter whose value is
            # already there, so a parent's flag alone does not say what its children have.
            for inner in nested_batchnorms(layer):
                if inner.trainable != train:
                    inner.trainable = train
    set_backbone_inference([container] if container is not None else layers, bn)
    return unfrozen


def nested_batchnorms(layer) -> list:
    """The BatchNormalization layers inside ``layer``, at any depth (not ``layer`` itself)."""
    return [inner for inner in compat.sublayers(layer) if is_batchnorm(inner)]


@contextlib.contextmanager
def trainable_flags_restored(layers: Sequence, container=None) -> Iterator[None]:
    """Inside the ``with`` block, unfreeze states may be applied (to plan a stage, to find what it
    trains); on leaving it every ``trainable`` flag under ``layers`` (and ``container``) is put
    back as it was, and every layer's inference mode (the ``"affine"`` BatchNorm policy's).

    Example:
    ```python
    with trainable_flags_restored(backbone.layers, backbone):
        unfrozen = apply_unfreeze(backbone.layers, blocks, 2, container=backbone)
        params = trainable_params(backbone.layers, backbone)
    ```
    """
    roots = ([container] if container is not None else []) + list(layers)
    flags = []
    seen: set[int] = set()
    for root in roots:
        for layer in compat.sublayers(root, include_self=True):
            if id(layer) not in seen:
                seen.add(id(layer))
                flags.append((layer, layer.trainable, compat.follows_training(layer)))
    try:
        yield
    finally:
        for layer, flag, follows in flags:  # parents first: their setter recurses into children
            if layer.trainable != flag:
                layer.trainable = flag
            compat.set_follows_training(layer, follows)


def count_weights(variables: Iterable) -> int:
    """Number of scalars in ``variables`` (each variable once), as Keras's ``count_params``
    counts them."""
    sizes = {id(v): math.prod(int(d) for d in v.shape) for v in variables}
    return sum(sizes.values())


def trainable_params(layers: Sequence, container=None) -> int:
    """Trainable scalars of a backbone: of ``container`` when there is one, else of ``layers``."""
    roots = [container] if container is not None else list(layers)
    return count_weights(v for root in roots for v in root.trainable_weights)

"""What a backbone is, as plain data: :class:`BackboneSpec`, :class:`BlockRule`, the preprocessing
modes, their validation, and the names ``build_model`` gives the parts of a model.

This module imports neither Keras nor pluggy: plugins, ``keras-tlft list`` and the registry read
specs without loading TensorFlow. A spec's ``builder`` imports Keras when it is called.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BACKBONE_LAYER",
    "HEAD_LAYER",
    "PREPROCESSING_MODES",
    "SPEC_ATTRIBUTE",
    "AmbiguousBackboneError",
    "BackboneSpec",
    "BlockRule",
    "BuilderResultError",
    "UnknownBackboneError",
    "closest_names",
    "did_you_mean",
    "NAME_PATTERN",
    "normalize",
    "validate_spec",
]

# The layer names build_model gives a model's parts, which ProgressiveUnfreeze and fit_frozen
# look for, and the attribute under which the model and its backbone carry their spec.
BACKBONE_LAYER = "backbone"
HEAD_LAYER = "head"
SPEC_ATTRIBUTE = "_tlft_spec"

PREPROCESSING_MODES = ("none", "caffe", "tf", "torch", "rescale")


@dataclass(frozen=True)
class BlockRule:
    """Where one block of a backbone begins.

    A block begins at the first layer (after the previous block began) whose name matches
    ``pattern`` (``re.match``); with ``after=True`` it begins at the layer *after* that one, for
    families whose layers carry generic names and whose blocks end at a named layer (InceptionV3's
    ``mixed0``, ``mixed1``...). A block runs until the next block begins.
    """

    name: str
    pattern: str
    after: bool = False


@dataclass(frozen=True)
class BackboneSpec:
    """What the rest of keras-tlft needs to know about a backbone, without building it.

    Args:
        name: the backbone's name, as users type it (``"vgg16"``).
        builder: ``builder(input_shape, weights, include_top) -> keras.Model``; imports Keras
            only when called. ``weights`` is ``None``, one of ``weights`` or a file path.
        source: the source that registered it (``"applications"``); filled in from the plugin's
            name when empty.
        family: the architecture family (``"vgg"``, ``"resnet"``).
        description: one line for ``keras-tlft list``.
        aliases: other names it resolves under.
        default_input_shape: ``(height, width, channels)`` the backbone was trained at.
        min_input_size: the smallest height or width it accepts; ``build_model`` resizes
            smaller inputs up to it inside the model.
        params: parameter count with ``include_top=False`` at ``default_input_shape``, exactly as
            Keras's ``count_params()`` reports it.
        preprocessing: one of ``PREPROCESSING_MODES`` (``"none"`` when the model rescales
            itself), or a callable returning a Keras layer that maps raw 0-255 pixels to the
            backbone's input.
        weights: the pretrained weights the builder can load (``("imagenet",)``).
        offline_weights: those of ``weights`` that load with no network (shipped inside an
            installed package rather than downloaded); ``keras-tlft list`` and ``inspect``
            mark them.
        blocks: the block rules, first block first; unfreezing works block by block.
    """

    name: str
    builder: Callable[..., Any]
    source: str = ""
    family: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()
    default_input_shape: tuple[int, int, int] = (224, 224, 3)
    min_input_size: int = 32
    params: int | None = None
    preprocessing: Any = "none"
    weights: tuple[str, ...] = ()
    offline_weights: tuple[str, ...] = ()
    blocks: tuple[BlockRule, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """The name that always resolves: ``source:name``."""
        return f"{self.source}:{self.name}"

    def build(self, input_shape=None, weights=None, include_top=False):
        """Build the Keras model (this imports Keras); a builder that returns anything but a
        ``keras.Model`` is a :class:`BuilderResultError` naming the plugin and the backbone."""
        import keras

        shape = tuple(input_shape) if input_shape is not None else self.default_input_shape
        model = self.builder(input_shape=shape, weights=weights, include_top=include_top)
        if not isinstance(model, keras.Model):
            raise BuilderResultError(
                f"The builder of backbone {self.name!r} from plugin {self.source!r} returned "
                f"a {type(model).__name__}, not a model: a builder must return a keras.Model, "
                f"received {type(model).__name__}. Expected builder(input_shape, weights, "
                "include_top) to return the backbone; fix the plugin's builder (`keras-tlft "
                f"check {self.key}` runs its checks). Received: {_short_repr(model)}"
            )
        return model


class BuilderResultError(TypeError):
    """A backbone builder returned something other than a ``keras.Model``."""


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def normalize(name: str) -> str:
    """Case- and separator-insensitive form of a name: ``VGG-16`` -> ``vgg16``."""
    return re.sub(r"[\s_\-.]+", "", name).lower()


class UnknownBackboneError(ValueError):
    """No registered backbone has that name."""


class AmbiguousBackboneError(ValueError):
    """More than one source registers that bare name."""


# What a name may look like: letters, digits, "_", "-" and "."; no ":" (it separates the source),
# no spaces (a CLI argument).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def validate_spec(spec: Any) -> str | None:
    """Why ``spec`` cannot be registered, or ``None`` when it is valid.

    These are every check that needs no model: ``register()`` applies them, and
    :func:`keras_tlft.testing.check_backbone_spec` applies exactly these before building.
    """
    if not isinstance(spec, BackboneSpec):
        return f"register() expects a BackboneSpec, received {type(spec).__name__}"
    problems = [*_name_problems(spec), *_shape_problems(spec), *_block_problems(spec)]
    if not callable(spec.builder):
        problems.append("builder must be callable")
    if spec.params is not None and (
        isinstance(spec.params, bool) or not isinstance(spec.params, int) or spec.params < 0
    ):
        problems.append(f"params must be a non-negative int or None, received {spec.params!r}")
    if not (callable(spec.preprocessing) or spec.preprocessing in PREPROCESSING_MODES):
        problems.append(
            f"preprocessing must be one of {PREPROCESSING_MODES} or a callable, "
            f"received {spec.preprocessing!r}"
        )
    if not _strings(spec.weights):
        problems.append(f"weights must be a tuple of strings, received {spec.weights!r}")
    elif not isinstance(spec.offline_weights, tuple) or not all(
        w in spec.weights for w in spec.offline_weights
    ):
        problems.append(
            f"offline_weights must be a tuple of names from weights {spec.weights!r}, "
            f"received {spec.offline_weights!r}"
        )
    return "; ".join(problems) or None


def _strings(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) for v in value)


def _name_problems(spec: BackboneSpec) -> list[str]:
    problems = []
    if not isinstance(spec.name, str) or not normalize(spec.name):
        problems.append(f"name must be a non-empty string, received {spec.name!r}")
    elif not NAME_PATTERN.fullmatch(spec.name):
        problems.append(_bad_name("name", spec.name))
    if not _strings(spec.aliases):
        problems.append("aliases must be a tuple of strings")
    else:
        problems += [_bad_name("alias", a) for a in spec.aliases if not NAME_PATTERN.fullmatch(a)]
    source = spec.source
    if not isinstance(source, str) or (source and not NAME_PATTERN.fullmatch(source)):
        problems.append(_bad_name("source", spec.source))
    return problems


def _bad_name(field_name: str, value) -> str:
    return (
        f"{field_name} {value!r} must be letters, digits, '_', '-' or '.' (no ':', no spaces: "
        "users type it as NAME or SOURCE:NAME)"
    )


def _shape_problems(spec: BackboneSpec) -> list[str]:
    shape = spec.default_input_shape
    if not (
        isinstance(shape, tuple)
        and len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        return [f"default_input_shape must be 3 positive ints, received {shape!r}"]
    size = spec.min_input_size
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        return [f"min_input_size must be a positive int, received {size!r}"]
    if size > min(shape[:2]):
        return [
            f"min_input_size ({size}) is larger than default_input_shape {shape}; the default "
            "input must be a valid input"
        ]
    return []


def _block_problems(spec: BackboneSpec) -> list[str]:
    if not isinstance(spec.blocks, tuple) or not all(isinstance(b, BlockRule) for b in spec.blocks):
        return ["blocks must be a tuple of BlockRule"]
    problems = []
    names = [rule.name for rule in spec.blocks]
    duplicates = sorted({n for n in names if names.count(n) > 1}, key=str)
    if duplicates:
        problems.append(f"block names must be unique; repeated: {', '.join(map(str, duplicates))}")
    for rule in spec.blocks:
        if not isinstance(rule.name, str) or not rule.name:
            problems.append(f"a block's name must be a non-empty string, received {rule.name!r}")
        if not isinstance(rule.pattern, str):
            problems.append(f"block {rule.name!r}: pattern must be a string")
            continue
        try:
            re.compile(rule.pattern)
        except re.error as exc:
            problems.append(
                f"block {rule.name!r}: pattern {rule.pattern!r} is not a valid regular "
                f"expression ({exc})"
            )
    return problems


def closest_names(name: str, names: Sequence[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """The ``n`` names closest to ``name`` (``difflib``'s ratio of at least ``cutoff``)."""
    return difflib.get_close_matches(name, list(names), n=n, cutoff=cutoff)


def did_you_mean(names: Sequence[str]) -> str:
    """`` Did you mean: a, b?`` for suggested ``names``, or an empty string when there are none."""
    return f" Did you mean: {', '.join(names)}?" if names else ""

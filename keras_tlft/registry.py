"""Backbone specs and name resolution ("source:name", aliases, suggestions).

Nothing here imports Keras: a spec is plain data plus a ``builder`` that imports Keras when called.
"""

from __future__ import annotations

import difflib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keras_tlft.plugins import PluginFailure, PluginInfo, make_plugin_manager, plugin_infos, strict

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
        """Build the Keras model (this imports Keras)."""
        shape = tuple(input_shape) if input_shape is not None else self.default_input_shape
        return self.builder(input_shape=shape, weights=weights, include_top=include_top)


def normalize(name: str) -> str:
    """Case- and separator-insensitive form of a name: ``VGG-16`` -> ``vgg16``."""
    return re.sub(r"[\s_\-.]+", "", name).lower()


class UnknownBackboneError(ValueError):
    """No registered backbone has that name."""


class AmbiguousBackboneError(ValueError):
    """More than one source registers that bare name."""


def validate_spec(spec: Any) -> str | None:
    """Why ``spec`` cannot be registered, or ``None`` when it is valid."""
    if not isinstance(spec, BackboneSpec):
        return f"register() expects a BackboneSpec, received {type(spec).__name__}"
    problems = []
    if not isinstance(spec.name, str) or not normalize(spec.name):
        problems.append(f"name must be a non-empty string, received {spec.name!r}")
    if not callable(spec.builder):
        problems.append("builder must be callable")
    shape = spec.default_input_shape
    if not (
        isinstance(shape, tuple)
        and len(shape) == 3
        and all(isinstance(d, int) and d > 0 for d in shape)
    ):
        problems.append(f"default_input_shape must be 3 positive ints, received {shape!r}")
    if spec.params is not None and (not isinstance(spec.params, int) or spec.params < 0):
        problems.append(f"params must be a non-negative int or None, received {spec.params!r}")
    if not (callable(spec.preprocessing) or spec.preprocessing in PREPROCESSING_MODES):
        problems.append(
            f"preprocessing must be one of {PREPROCESSING_MODES} or a callable, "
            f"received {spec.preprocessing!r}"
        )
    if not all(isinstance(b, BlockRule) for b in spec.blocks):
        problems.append("blocks must be a tuple of BlockRule")
    if not isinstance(spec.offline_weights, tuple) or not all(
        w in spec.weights for w in spec.offline_weights
    ):
        problems.append(
            f"offline_weights must be a tuple of names from weights {spec.weights!r}, "
            f"received {spec.offline_weights!r}"
        )
    if not isinstance(spec.aliases, tuple) or not all(isinstance(a, str) for a in spec.aliases):
        problems.append("aliases must be a tuple of strings")
    return "; ".join(problems) or None


class Registry:
    """Every registered backbone, indexed by ``source:name``, bare name and alias."""

    def __init__(self):
        self.specs: dict[str, BackboneSpec] = {}
        self.registrant: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginInfo] = []
        self._bare: dict[str, list[str]] = {}

    @classmethod
    def from_plugin_manager(cls, pm, failures=(), dists=None) -> Registry:
        """Run every plugin's ``register_backbones`` hook into a new registry."""
        registry = cls()
        registry.failures.extend(failures)
        for impl in pm.hook.register_backbones.get_hookimpls():
            registry.collect(impl.plugin_name, impl.function)
        registry.plugins = plugin_infos(pm, dists or {})
        for failure in registry.failures:
            warnings.warn(f"keras-tlft plugin {failure.plugin!r}: {failure.reason}", stacklevel=2)
        return registry

    def collect(self, plugin: str, hook: Callable) -> None:
        """Call one plugin's hook; a plugin that raises is recorded, not propagated."""
        self.counts.setdefault(plugin, 0)
        try:
            hook(register=lambda spec: self.register(spec, plugin))
        except Exception as exc:
            if strict():
                raise
            self.failures.append(
                PluginFailure(plugin, f"register_backbones raised {type(exc).__name__}: {exc}")
            )

    def register(self, spec: BackboneSpec, plugin: str = "<direct>") -> None:
        """Validate and add one spec; an invalid or duplicate one is recorded as a failure."""
        problem = validate_spec(spec)
        if problem is None:
            if not spec.source:
                spec = _replace(spec, source=plugin)
            key = f"{normalize(spec.source)}:{normalize(spec.name)}"
            if key in self.specs:
                problem = (
                    f"backbone {spec.key!r} is registered twice: by plugin "
                    f"{self.registrant[key]!r} and by plugin {plugin!r}; the first is kept"
                )
        if problem is not None:
            if strict():
                raise ValueError(f"plugin {plugin!r}: {problem}")
            self.failures.append(PluginFailure(plugin, problem))
            return
        self.specs[key] = spec
        self.registrant[key] = plugin
        self.counts[plugin] = self.counts.get(plugin, 0) + 1
        for bare in {normalize(spec.name), *(normalize(a) for a in spec.aliases)}:
            self._bare.setdefault(bare, []).append(key)

    def __iter__(self):
        return iter(sorted(self.specs.values(), key=lambda s: (s.source, s.family, s.name)))

    def __len__(self):
        return len(self.specs)

    def resolve(self, name: str) -> BackboneSpec:
        """The spec for ``name``: ``source:name``, a bare name or an alias, in any case."""
        if not isinstance(name, str):
            raise TypeError(f"A backbone name must be a string. Received: name={name!r}")
        if ":" in name:
            source, _, bare = name.partition(":")
            key = f"{normalize(source)}:{normalize(bare)}"
            if key in self.specs:
                return self.specs[key]
            prefix = normalize(source) + ":"
            keys = [k for k in self._bare.get(normalize(bare), []) if k.startswith(prefix)]
            if len(keys) == 1:
                return self.specs[keys[0]]
        else:
            keys = self._bare.get(normalize(name), [])
            if len(keys) == 1:
                return self.specs[keys[0]]
            if len(keys) > 1:
                both = ", ".join(sorted(self.specs[k].key for k in keys))
                raise AmbiguousBackboneError(
                    f"Backbone name {name!r} is registered by more than one source; "
                    f"name one of: {both}. Received: name={name!r}"
                )
        raise UnknownBackboneError(self._unknown_message(name))

    def suggestions(self, name: str, n: int = 5) -> list[str]:
        """The registered names closest to ``name``."""
        names = {normalize(s.name): s.name for s in self.specs.values()}
        bare = normalize(name.partition(":")[2] if ":" in name else name)
        close = difflib.get_close_matches(bare, list(names), n=n, cutoff=0.5)
        prefixed = [k for k in names if k.startswith(bare) and k not in close] if bare else []
        return [names[k] for k in (close + sorted(prefixed))[:n]]

    def _unknown_message(self, name: str) -> str:
        close = self.suggestions(name)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        return (
            f"Unknown backbone {name!r}.{hint} Run `keras-tlft list` to see every registered "
            f"backbone. Received: name={name!r}"
        )


def _replace(spec: BackboneSpec, **changes) -> BackboneSpec:
    from dataclasses import replace

    return replace(spec, **changes)


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        pm, failures, dists = make_plugin_manager()
        _REGISTRY = Registry.from_plugin_manager(pm, failures, dists)
    return _REGISTRY


def get_backbone(name) -> BackboneSpec:
    """The registered :class:`BackboneSpec` for ``name`` (a spec is returned as it is).

    A path to a ``.keras`` file gives that file's spec (see :func:`keras_tlft.local.local_spec`).
    """
    if isinstance(name, BackboneSpec):
        return name
    from keras_tlft.local import is_local_path, local_spec

    if is_local_path(name):
        return local_spec(name)
    return get_registry().resolve(name)


def list_backbones(source: str | None = None) -> list[BackboneSpec]:
    """Every registered backbone, optionally only those of one source."""
    specs = list(get_registry())
    if source is not None:
        specs = [s for s in specs if normalize(s.source) == normalize(source)]
    return specs

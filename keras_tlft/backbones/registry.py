"""The registry of every installed plugin's backbones, and name resolution ("source:name",
aliases, suggestions).

Nothing here imports Keras. The specs themselves are plain data, in :mod:`keras_tlft.spec`; their
names are re-exported here, where keras-tlft 0.1 defined them.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import re
import warnings
from collections.abc import Callable

from keras_tlft.backbones.plugins import (
    STRICT_ENV,
    PluginFailure,
    PluginInfo,
    disabled_plugins,
    is_first_party,
    make_plugin_manager,
    plugin_infos,
    strict,
)
from keras_tlft.backbones.spec import (
    NAME_PATTERN,
    PREPROCESSING_MODES,
    AmbiguousBackboneError,
    BackboneSpec,
    BlockRule,
    UnknownBackboneError,
    closest_names,
    did_you_mean,
    normalize,
    validate_spec,
)
from keras_tlft.checks import strip_controls

__all__ = [
    "PREPROCESSING_MODES",
    "AmbiguousBackboneError",
    "BackboneSpec",
    "BlockRule",
    "NameCollision",
    "NameCollisionWarning",
    "PluginWarning",
    "Registry",
    "UnknownBackboneError",
    "get_backbone",
    "get_registry",
    "list_backbones",
    "normalize",
    "validate_spec",
]

DIRECT = "<direct>"


@dataclasses.dataclass(frozen=True)
class NameCollision:
    """A bare name (or alias) that more than one backbone registers.

    ``resolves_to`` is the key the bare name resolves to (a first-party backbone keeps its bare
    name), or ``None`` when the bare name is ambiguous and every backbone needs its
    ``source:name``.
    """

    name: str
    keys: tuple[str, ...]
    resolves_to: str | None

    def message(self) -> str:
        """One line for ``keras-tlft list`` and ``keras-tlft plugins``."""
        keys = ", ".join(self.keys)
        if self.resolves_to is None:
            return f"{self.name!r} is registered by {keys}: it is ambiguous; name the source"
        others = ", ".join(k for k in self.keys if k != self.resolves_to)
        return (
            f"{self.name!r} is registered by {keys}: it means the first-party "
            f"{self.resolves_to}; use {others} for the other"
        )


class PluginWarning(UserWarning):
    """A plugin failed to load or to register something (:attr:`failure`); keras-tlft carries
    on without it. ``keras-tlft plugins`` lists every such failure; ``KERAS_TLFT_STRICT_PLUGINS=1``
    raises it instead."""

    def __init__(self, failure: PluginFailure | str):
        if isinstance(failure, str):  # rebuilt from its message (pytest-xdist)
            super().__init__(failure)
            self.failure = None
            return
        super().__init__(strip_controls(
            f"keras-tlft plugin {failure.plugin!r}: {failure.reason} (`keras-tlft plugins` lists "
            f"every plugin failure; {STRICT_ENV}=1 raises it)"))
        self.failure = failure


class NameCollisionWarning(UserWarning):
    """Several plugins register one bare backbone name (:attr:`collision`)."""

    def __init__(self, collision: NameCollision | str):
        if isinstance(collision, str):  # rebuilt from its message (pytest-xdist)
            super().__init__(collision)
            self.collision = None
            return
        super().__init__(strip_controls(f"keras-tlft backbone name {collision.message()}"))
        self.collision = collision


def _user_stacklevel() -> int:
    """The stacklevel of the first caller outside keras-tlft: a warning then shows the user's
    own line, not ours."""
    frame, level = inspect.currentframe().f_back, 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("keras_tlft"):
        frame, level = frame.f_back, level + 1
    return level


class Registry:
    """Every registered backbone, indexed by ``source:name``, bare name and alias.

    Names are protected: a spec's ``source`` is the name of the plugin that registers it (left
    empty, the host fills it in; any other value is refused), so no plugin can register under
    another's ``source:name``. A bare name or alias that several sources register resolves to
    the first-party backbone (one of keras-tlft's own plugins) when there is one, and is
    ambiguous otherwise; either way the collision is listed in :attr:`collisions` (shown by
    ``keras-tlft list`` and ``keras-tlft plugins``), and in strict mode it is an error.
    """

    def __init__(self, first_party=()):
        self.specs: dict[str, BackboneSpec] = {}
        self.registrant: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.failures: list[PluginFailure] = []
        self.plugins: list[PluginInfo] = []
        self.first_party: set[str] = set(first_party)
        self.disabled: list[str] = []
        self.unavailable: dict[str, str] = {}
        # Head presets (name -> factory(num_classes) -> head spec) and schedule presets
        # (name -> factory(**options) -> Schedule), from the register_heads and
        # register_schedules hooks; recipe_owner: (kind, name) -> the plugin that registered it.
        self.heads: dict[str, Callable] = {}
        self.schedules: dict[str, Callable] = {}
        self.recipe_owner: dict[tuple[str, str], str] = {}
        self._bare: dict[str, list[str]] = {}

    @classmethod
    def from_plugin_manager(cls, pm, failures=(), dists=None, loads=None) -> Registry:
        """Run every plugin's hooks into a new registry (first-party plugins first)."""
        dists = dists or {}
        registry = cls(first_party={p for p, d in dists.items() if is_first_party(d)})
        registry.failures.extend(failures)

        def impls(hook):  # first-party first: their recipe names are kept on a clash
            return sorted(hook.get_hookimpls(),
                          key=lambda i: (i.plugin_name not in registry.first_party, i.plugin_name))

        for impl in impls(pm.hook.register_backbones):
            registry.collect(impl.plugin_name, impl.function)
        for kind, hook in (("head", pm.hook.register_heads),
                           ("schedule", pm.hook.register_schedules)):
            for impl in impls(hook):
                registry.collect_recipes(kind, impl.plugin_name, impl.function)
        for impl in pm.hook.plugin_unavailable.get_hookimpls():
            registry.collect_unavailable(impl.plugin_name, impl.function)
        registry.plugins = plugin_infos(pm, dists, loads)
        registry.disabled = sorted(n for n in disabled_plugins() if pm.is_blocked(n))
        for failure in registry.failures:
            warnings.warn(PluginWarning(failure), stacklevel=_user_stacklevel())
        for collision in registry.collisions:
            warnings.warn(NameCollisionWarning(collision), stacklevel=_user_stacklevel())
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

    def collect_recipes(self, kind: str, plugin: str, hook: Callable) -> None:
        """Call one plugin's ``register_heads`` (``kind="head"``) or ``register_schedules``
        (``kind="schedule"``) hook; a plugin that raises is recorded, not propagated."""
        try:
            hook(register=lambda name, factory: self.register_recipe(kind, name, factory,
                                                                     plugin))
        except Exception as exc:
            if strict():
                raise
            self.failures.append(
                PluginFailure(plugin, f"register_{kind}s raised {type(exc).__name__}: {exc}")
            )

    def register_recipe(self, kind: str, name: str, factory: Callable,
                        plugin: str = DIRECT) -> None:
        """Add one head or schedule preset; an invalid or taken name is recorded as a failure."""
        table = self.heads if kind == "head" else self.schedules
        problem = None
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            problem = (f"a {kind} preset name must be letters, digits, '_', '-' or '.', "
                       f"received {name!r}")
        elif not callable(factory):
            problem = f"the {kind} preset {name!r} must be registered with a callable factory"
        elif name.lower() in table:
            owner = self.recipe_owner[(kind, name.lower())]
            problem = (f"the {kind} preset {name!r} is registered twice: by plugin {owner!r} "
                       f"and by plugin {plugin!r}; the first is kept")
        if problem is not None:
            if strict():
                raise ValueError(f"plugin {plugin!r}: {problem}")
            self.failures.append(PluginFailure(plugin, problem))
            return
        table[name.lower()] = factory
        self.recipe_owner[(kind, name.lower())] = plugin

    def collect_unavailable(self, plugin: str, hook: Callable) -> None:
        """Record why ``plugin`` registers nothing now (its ``plugin_unavailable`` hook)."""
        try:
            reason = hook()
        except Exception as exc:
            if strict():
                raise
            reason = f"plugin_unavailable raised {type(exc).__name__}: {exc}"
        if reason:
            self.unavailable[plugin] = str(reason)

    def register(self, spec: BackboneSpec, plugin: str = DIRECT) -> None:
        """Validate and add one spec; an invalid or duplicate one is recorded as a failure.

        ``plugin`` is the registering plugin's name; the spec's ``source`` must be empty (it
        becomes ``plugin``) or equal to it. Only a direct call (no plugin) may name any source.
        """
        problem = validate_spec(spec)
        if problem is None:
            problem = _source_problem(spec, plugin)
        if problem is None:
            if not spec.source:
                spec = dataclasses.replace(spec, source=plugin)
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
            if strict() and len(self._bare[bare]) > 1:
                collision = self._collision(bare).message()
                raise ValueError(f"plugin {plugin!r}: backbone name {collision}")

    def _is_first_party(self, key: str) -> bool:
        return self.registrant.get(key) in self.first_party

    def _collision(self, bare: str) -> NameCollision:
        keys = self._bare[bare]
        first = [k for k in keys if self._is_first_party(k)]
        return NameCollision(
            name=bare,
            keys=tuple(sorted(self.specs[k].key for k in keys)),
            resolves_to=self.specs[first[0]].key if len(first) == 1 else None,
        )

    @property
    def collisions(self) -> list[NameCollision]:
        """Every bare name or alias registered by more than one backbone, by name."""
        return [self._collision(bare) for bare in sorted(self._bare) if len(self._bare[bare]) > 1]

    def __iter__(self):
        return iter(sorted(self.specs.values(), key=lambda s: (s.source, natural_key(s.name))))

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
            if len(keys) > 1:  # a first-party backbone keeps its bare name
                first = [k for k in keys if self._is_first_party(k)]
                keys = first if len(first) == 1 else keys
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
        close = closest_names(bare, list(names), n=n, cutoff=0.5)
        prefixed = [k for k in names if k.startswith(bare) and k not in close] if bare else []
        return [names[k] for k in (close + sorted(prefixed))[:n]]

    def _unknown_message(self, name: str) -> str:
        hint = did_you_mean(self.suggestions(name))
        return (
            f"Unknown backbone {name!r}.{hint} Run `keras-tlft list` to see every registered "
            f"backbone. Received: name={name!r}"
        )


def _source_problem(spec: BackboneSpec, plugin: str) -> str | None:
    if plugin == DIRECT or not spec.source or normalize(spec.source) == normalize(plugin):
        return None
    return (
        f"backbone {spec.name!r} declares source={spec.source!r}, but plugin {plugin!r} "
        f"registers it; a spec's source is the name of the plugin that registers it: leave "
        f"source empty or set source={plugin!r}"
    )


_REGISTRY: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The registry of every installed plugin, loaded once per process."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        loaded = make_plugin_manager()
        _REGISTRY = Registry.from_plugin_manager(loaded.pm, loaded.failures, loaded.dists,
                                                 loaded.loads)
    return _REGISTRY


def get_backbone(name) -> BackboneSpec:
    """The registered :class:`BackboneSpec` for ``name`` (a spec is returned as it is).

    A path to a ``.keras`` file gives that file's spec (see :func:`keras_tlft.local.local_spec`).
    """
    if isinstance(name, BackboneSpec):
        return name
    from keras_tlft.backbones.local import is_local_path, local_spec

    if is_local_path(name):
        return local_spec(name)
    return get_registry().resolve(name)


def natural_key(name: str) -> tuple:
    """Sort key that orders numbers by value: ``resnet50`` before ``resnet101``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", name) if part)


def list_backbones(source: str | None = None, pattern: str | None = None,
                   offline_weights: bool = False) -> list[BackboneSpec]:
    """Every registered backbone, by source, then by name in natural order.

    Args:
        source: only the backbones of this source.
        pattern: only the backbones whose name, ``source:name`` or an alias matches this
            shell-style wildcard (``fnmatch``, case-insensitive): ``"resnet*"``, ``"*:vgg*"``.
        offline_weights: only the backbones with pretrained weights that load with no network.
    """
    specs = list(get_registry())
    if source is not None:
        specs = [s for s in specs if normalize(s.source) == normalize(source)]
    if pattern is not None:
        wildcard = pattern.lower()
        specs = [s for s in specs if any(fnmatch.fnmatchcase(n.lower(), wildcard)
                                         for n in (s.name, s.key, *s.aliases))]
    if offline_weights:
        specs = [s for s in specs if s.offline_weights]
    return specs

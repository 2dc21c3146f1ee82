"""The plugin manager: entry points loaded one by one, failures recorded, never raised.

pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that fails to import, so
one broken plugin would take the whole program down. We walk the entry points ourselves, as conda
does, and record each failure with the plugin's name. Set ``KERAS_TLFT_STRICT_PLUGINS=1`` to get
the original exception instead (useful while writing a plugin).

Plugin names are protected: keras-tlft's own entry points (those of the ``keras-tlft``
distribution) load first, and an entry point of another distribution that reuses a name already
loaded is refused and recorded, never loaded in its place. ``KERAS_TLFT_DISABLE_PLUGINS=a,b``
leaves the named plugins unloaded without uninstalling them (as pytest's ``-p no:NAME``).
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from keras_tlft.backbones import hookspecs

ENTRY_POINT_GROUP = "keras_tlft"
STRICT_ENV = "KERAS_TLFT_STRICT_PLUGINS"
DISABLE_ENV = "KERAS_TLFT_DISABLE_PLUGINS"
FIRST_PARTY_DISTRIBUTION = "keras-tlft"
# The name under which keras-tlft registers its own heads and schedule presets.
DEFAULT_PLUGIN = "keras_tlft"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose registration was refused."""

    plugin: str
    reason: str


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin: its name, the distribution that ships it, and its version.

    ``entry_point`` is the entry point's target (``"package.module"``), ``module`` the file it
    was loaded from, ``load_seconds`` how long importing it took, ``api_version`` the plugin API
    version it declares (``KERAS_TLFT_PLUGIN_API``; ``None`` when it declares none).
    """

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    entry_point: str | None = None
    module: str | None = None
    load_seconds: float | None = None
    api_version: int | None = None


@dataclass
class LoadedPlugins:
    """What :func:`make_plugin_manager` loaded: the manager, the failures, each plugin's
    distribution, and each plugin's :class:`LoadRecord`."""

    pm: pluggy.PluginManager
    failures: list[PluginFailure]
    dists: dict[str, str]
    loads: dict[str, LoadRecord] = field(default_factory=dict)

    def __iter__(self):  # pm, failures, dists = make_plugin_manager()
        return iter((self.pm, self.failures, self.dists))


@dataclass(frozen=True)
class LoadRecord:
    """How one plugin's entry point loaded: its target, the time taken, heavy modules pulled in."""

    entry_point: str
    seconds: float
    heavy_imports: tuple[str, ...]


# Importing any of these makes `keras-tlft list` take seconds instead of a fraction of one.
HEAVY_MODULES = ("keras", "tensorflow", "torch", "jax", "keras_cv", "keras_hub")


def strict() -> bool:
    """Whether plugin failures raise instead of being recorded."""
    return os.environ.get(STRICT_ENV, "").lower() not in ("", "0", "false", "no")


def disabled_plugins() -> set[str]:
    """The plugin names listed in ``KERAS_TLFT_DISABLE_PLUGINS`` (comma-separated)."""
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _entry_points():
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def _dist_name(ep) -> str | None:
    return ep.dist.name if getattr(ep, "dist", None) is not None else None


def is_first_party(distribution: str | None) -> bool:
    """Whether ``distribution`` is keras-tlft itself (whose plugins keep their bare names)."""
    return distribution is not None and _canonical(distribution) == FIRST_PARTY_DISTRIBUTION


def _canonical(distribution: str) -> str:
    return distribution.replace("_", "-").replace(".", "-").lower()


def make_plugin_manager() -> LoadedPlugins:
    """Load every entry point of the ``keras_tlft`` group into a new plugin manager.

    keras-tlft's own entry points load first; a later entry point whose name is taken is refused
    and recorded. Plugins named in ``KERAS_TLFT_DISABLE_PLUGINS`` are blocked, not loaded.

    Returns the manager, the failures met while loading, for each loaded plugin the name of the
    distribution that ships it, and how each loaded (unpacks as ``pm, failures, dists``). A
    plugin whose import pulls in Keras or TensorFlow is recorded as a failure too: it still
    works, but it makes every ``keras-tlft list`` slow.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    failures: list[PluginFailure] = []
    dists: dict[str, str] = {}
    loads: dict[str, LoadRecord] = {}
    from keras_tlft.backbones import default_plugins

    pm.register(default_plugins, name=DEFAULT_PLUGIN)
    dists[DEFAULT_PLUGIN] = FIRST_PARTY_DISTRIBUTION
    entry_points = list(_entry_points())
    installed = {ep.name for ep in entry_points}
    for name in sorted(disabled_plugins()):
        if name in installed and name != DEFAULT_PLUGIN:
            pm.set_blocked(name)
        else:
            failures.append(_not_disabled(name, installed))
    if failures and strict():
        raise ValueError(f"plugin {failures[0].plugin!r}: {failures[0].reason}")
    order = sorted(entry_points, key=lambda e: (not is_first_party(_dist_name(e)), e.name))
    for ep in order:
        if pm.is_blocked(ep.name):
            continue
        if pm.has_plugin(ep.name):
            failure = _name_taken(ep, dists.get(ep.name))
            if failure is not None:
                if strict():
                    raise ValueError(f"plugin {failure.plugin!r}: {failure.reason}")
                failures.append(failure)
            continue
        before = [m for m in HEAVY_MODULES if m not in sys.modules]
        start = time.perf_counter()
        plugin = None
        try:
            plugin = ep.load()
            check_api_version(plugin)
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a plugin may raise anything on import
            if strict():
                raise
            failures.append(PluginFailure(ep.name, _load_failure(pm, ep.name, plugin, exc)))
            if plugin is not None and pm.get_plugin(ep.name) is plugin:
                pm.unregister(name=ep.name)  # pluggy keeps a half-registered plugin
            continue
        record = LoadRecord(ep.value, time.perf_counter() - start,
                            tuple(m for m in before if m in sys.modules))
        loads[ep.name] = record
        if record.heavy_imports:
            if strict():
                raise RuntimeError(f"plugin {ep.name!r} {_heavy_message(record)}")
            failures.append(PluginFailure(ep.name, _heavy_message(record)))
        if _dist_name(ep) is not None:
            dists[ep.name] = _dist_name(ep)
    failures.extend(check_hooks(pm))
    return LoadedPlugins(pm, failures, dists, loads)


def _not_disabled(name: str, installed: set[str]) -> PluginFailure:
    """Why a name in ``KERAS_TLFT_DISABLE_PLUGINS`` disabled nothing."""
    if name == DEFAULT_PLUGIN:
        why = ("keras-tlft's own heads and schedule presets cannot be disabled; name the "
               "plugins of backbones to disable instead")
    else:
        spelled = [n for n in sorted(installed) if n.lower() == name.lower()]
        why = (f"no installed plugin is named {name!r}"
               + (f" (names are matched exactly: did you mean {spelled[0]!r}?)" if spelled
                  else f"; the installed ones are {', '.join(sorted(installed)) or 'none'}"))
    return PluginFailure(f"{name} ({DISABLE_ENV})", f"{why}. Nothing was disabled by it")


def api_version(plugin) -> int | None:
    """The plugin API version ``plugin`` declares (``KERAS_TLFT_PLUGIN_API``), or ``None``."""
    return getattr(plugin, hookspecs.PLUGIN_API_ATTRIBUTE, None)


def check_api_version(plugin) -> None:
    """Raise when ``plugin`` declares a plugin API version this keras-tlft does not provide."""
    declared = api_version(plugin)
    if declared is None:
        return
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise TypeError(
            f"{hookspecs.PLUGIN_API_ATTRIBUTE} must be a positive int such as "
            f"{hookspecs.PLUGIN_API_VERSION}. Received: "
            f"{hookspecs.PLUGIN_API_ATTRIBUTE}={declared!r}"
        )
    if declared > hookspecs.PLUGIN_API_VERSION:
        raise RuntimeError(
            f"the plugin needs keras-tlft plugin API {declared}, but this keras-tlft provides "
            f"API {hookspecs.PLUGIN_API_VERSION}; upgrade keras-tlft "
            "(pip install -U keras-tlft)"
        )


def _load_failure(pm: pluggy.PluginManager, name: str, plugin, exc: Exception) -> str:
    """Why plugin ``name`` failed to load, in words; for a hook implementation whose arguments
    its hook does not have, which hook takes what and what the plugin declares (pluggy's own
    message names only the hook)."""
    if isinstance(exc, pluggy.PluginValidationError) and plugin is not None:
        mismatch = _signature_mismatch(pm, name, plugin)
        if mismatch is not None:
            return mismatch
    return f"failed to load: {type(exc).__name__}: {exc}"


def _signature_mismatch(pm: pluggy.PluginManager, name: str, plugin) -> str | None:
    for attr in dir(plugin):
        if pm.parse_hookimpl_opts(plugin, attr) is None:
            continue
        caller = getattr(pm.hook, attr, None)
        if caller is None or caller.spec is None:
            continue
        takes = list(inspect.signature(caller.spec.function).parameters)
        try:
            declares = list(inspect.signature(getattr(plugin, attr)).parameters)
        except (TypeError, ValueError):
            continue
        if set(declares) - set(takes):
            return (f"hook {attr} takes ({', '.join(takes)}), plugin {name!r} declares "
                    f"({', '.join(declares)}): a hook implementation may take only the hook's "
                    "arguments, by those names")
    return None


def _heavy_message(record: LoadRecord) -> str:
    return (
        f"imports {', '.join(record.heavy_imports)} at import time (loading took "
        f"{record.seconds:.1f} s), which slows every `keras-tlft list`; import them inside the "
        "builder instead"
    )


def _name_taken(ep, holder: str | None) -> PluginFailure | None:
    """The failure for an entry point whose plugin name another distribution already holds."""
    dist = _dist_name(ep)
    if dist is not None and holder is not None and _canonical(dist) == _canonical(holder):
        return None  # the same distribution seen twice on the path
    return PluginFailure(
        f"{ep.name} (from {dist or 'an unknown distribution'})",
        f"the plugin name {ep.name!r} is taken by distribution {holder or 'unknown'!r}; the "
        f"entry point {ep.value!r} of distribution {dist or 'unknown'!r} was not loaded. "
        "Rename that entry point",
    )


def check_hooks(pm: pluggy.PluginManager) -> list[PluginFailure]:
    """Record hook implementations that match no specification (a misspelt hook name)."""
    failures = []
    for name in pm.hook.__dict__:
        if name.startswith("_"):
            continue
        caller = getattr(pm.hook, name)
        if caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            failures.append(
                PluginFailure(
                    impl.plugin_name,
                    f"implements unknown hook {name!r}; the known hooks are "
                    f"{', '.join(known_hooks())}",
                )
            )
    if failures and strict():
        pm.check_pending()
    return failures


def known_hooks() -> list[str]:
    """The names of the hooks a plugin can implement."""
    return [n for n in ("register_backbones", "register_heads", "register_schedules",
                        "plugin_unavailable") if hasattr(hookspecs, n)]


def plugin_infos(pm: pluggy.PluginManager, dists: dict[str, str],
                 loads: dict[str, LoadRecord] | None = None) -> list[PluginInfo]:
    """Describe the registered plugins: name, distribution, version, hooks implemented, and
    (from ``loads``) the entry point, the module's file and the load time."""
    loads = loads or {}
    infos = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        if plugin is None:  # blocked: a disabled plugin
            continue
        dist = dists.get(name)
        version = None
        if dist:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = None
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        load = loads.get(name)
        infos.append(PluginInfo(
            name, dist, version, hooks,
            entry_point=load.entry_point if load else getattr(plugin, "__name__", None),
            module=getattr(plugin, "__file__", None),
            load_seconds=load.seconds if load else None,
            api_version=api_version(plugin),
        ))
    return infos

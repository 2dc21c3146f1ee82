"""The plugin manager: entry points loaded one by one, failures recorded, never raised.

pluggy's own ``load_setuptools_entrypoints`` stops at the first plugin that fails to import, so
one broken plugin would take the whole program down. We walk the entry points ourselves, as conda
does, and record each failure with the plugin's name. Set ``KERAS_TLFT_STRICT_PLUGINS=1`` to get
the original exception instead (useful while writing a plugin).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

import pluggy

from keras_tlft import hookspecs

ENTRY_POINT_GROUP = "keras_tlft"
STRICT_ENV = "KERAS_TLFT_STRICT_PLUGINS"


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded or whose registration was refused."""

    plugin: str
    reason: str


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin: its name, the distribution that ships it, and its version."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]


def strict() -> bool:
    """Whether plugin failures raise instead of being recorded."""
    return os.environ.get(STRICT_ENV, "").lower() not in ("", "0", "false", "no")


def _entry_points():
    return metadata.entry_points(group=ENTRY_POINT_GROUP)


def make_plugin_manager() -> tuple[pluggy.PluginManager, list[PluginFailure], dict[str, str]]:
    """Load every entry point of the ``keras_tlft`` group into a new plugin manager.

    Returns the manager, the failures met while loading, and for each loaded plugin the name of
    the distribution that ships it.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    failures: list[PluginFailure] = []
    dists: dict[str, str] = {}
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a plugin may raise anything on import
            if strict():
                raise
            failures.append(PluginFailure(ep.name, f"failed to load: {type(exc).__name__}: {exc}"))
            continue
        if ep.dist is not None:
            dists[ep.name] = ep.dist.name
    failures.extend(check_hooks(pm))
    return pm, failures, dists


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
                    f"implements unknown hook {name!r}; the known hook is 'register_backbones'",
                )
            )
    if failures and strict():
        pm.check_pending()
    return failures


def plugin_infos(pm: pluggy.PluginManager, dists: dict[str, str]) -> list[PluginInfo]:
    """Describe the registered plugins: name, distribution, version, hooks implemented."""
    infos = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: p[0]):
        dist = dists.get(name)
        version = None
        if dist:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = None
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        infos.append(PluginInfo(name, dist, version, hooks))
    return infos

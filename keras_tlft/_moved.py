"""Old import paths: keras-tlft 0.1's flat modules, now in packages, still import.

``import keras_tlft.schedule`` gives the very module object ``keras_tlft.schedules.schedule`` (one
module per file: ``isinstance``, ``unittest.mock.patch("keras_tlft.staging.x")`` and pickles of
old paths keep working); :func:`rewrite` spells a source's imports of old paths at the new ones.
:data:`MOVED` maps each old path to its new one; a finder on
``sys.meta_path`` (installed by ``keras_tlft/__init__.py``) answers for the old paths only, so no
file is left behind at the old place.

An old path whose last part is a public name (``keras_tlft.plateau``, the module of the plateau
trigger, against ``keras_tlft.plateau``, the schedule preset) must not rebind that name: Python's
import sets the package's attribute to the module it loaded, so :class:`Package` (the package's
module type) refuses to let a module replace a public name that is not a module itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import re
import sys
import types

__all__ = ["MOVED", "Package", "install", "rewrite"]

# Each package, and the modules of 0.1's flat layout that moved into it.
_PACKAGES = {
    "backbones": ("spec", "hookspecs", "plugins", "default_plugins", "registry", "local",
                  "preset_backbones", "adapters", "testing", "plugin_template"),
    "model": ("assembly", "heads", "preprocessing", "blocks", "batchnorm", "discovery", "graph"),
    "schedules": ("schedule", "schedule_input", "presets", "plan", "lr_rules"),
    "callbacks": ("unfreeze", "staging", "optim", "plateau", "fit_checks", "early_stopping",
                  "drift"),
    "training": ("recipes", "cache", "feature_store", "batching", "history", "lr_finder",
                 "lr_result"),
    "reporting": ("report", "bench"),
}
MOVED = {f"keras_tlft.{name}": f"keras_tlft.{package}.{name}"
         for package, names in _PACKAGES.items() for name in names}

# Names an old module gave besides its own: keras_tlft.schedule re-exported those of the modules
# split off it (``from keras_tlft.schedule import two_phase``). The plain-data schedule no longer
# knows its parser, presets or plans; the old path alone still lends their names.
_ELSEWHERE = {
    "keras_tlft.schedule": {
        "parse_schedule": "keras_tlft.schedules.schedule_input",
        "parse_unfreeze": "keras_tlft.model.blocks",
        **dict.fromkeys(("COMMON_OPTIONS", "two_phase", "fine_tune_at", "gradual", "plateau",
                         "PRESETS", "PRESET_HELP", "registered_presets", "preset_options",
                         "parse_preset"), "keras_tlft.schedules.presets"),
        **dict.fromkeys(("plan_stages", "stage_at_epoch", "learning_rate_rules",
                         "describe_trigger", "stage_error"), "keras_tlft.schedules.plan"),
    },
}


class Package(types.ModuleType):
    """The module type of the ``keras_tlft`` package: a submodule never shadows a public name.

    Importing ``keras_tlft.X`` sets the package's attribute ``X`` to that module; where ``X`` is
    a public name that is not a module (``plateau``, the preset), the public name is kept.
    """

    def __setattr__(self, name, value):
        if (isinstance(value, types.ModuleType) and name in vars(self).get("__all__", ())
                and name not in vars(self).get("_PUBLIC_MODULES", ())):
            return
        super().__setattr__(name, value)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(fullname, new))


class _Alias(importlib.abc.Loader):
    """Loads an old path as the module at its new one (imported there first)."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self._spec = module.__spec__  # the import system sets the alias's; put it back below
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec
        elsewhere = _ELSEWHERE.get(self.old)
        if elsewhere and "__getattr__" not in vars(module):
            module.__getattr__ = _lend(module.__name__, elsewhere)


def _lend(module_name: str, elsewhere: dict):
    def __getattr__(name):
        if name in elsewhere:
            return getattr(importlib.import_module(elsewhere[name]), name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
    return __getattr__


def install(package: types.ModuleType) -> None:
    """Make ``package`` a :class:`Package` and answer the old paths (once per process)."""
    package.__class__ = Package
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())


def rewrite(text: str) -> str:
    """``text`` (Python source) with its imports of old paths spelled at the new ones."""
    def new_path(match):
        old = f"keras_tlft.{match[2]}"
        return match[1] + MOVED.get(old, old)

    def new_from(match):
        new = MOVED.get(f"keras_tlft.{match[2]}")
        if new is None or match[2] in sys.modules["keras_tlft"].__all__:  # a public name
            return match[0]
        package, name = new.rsplit(".", 1)
        return f"{match[1]}from {package} import {name}"

    text = re.sub(r"^(\s*(?:from|import) )keras_tlft\.(\w+)\b", new_path, text, flags=re.M)
    return re.sub(r"^(\s*)from keras_tlft import (\w+)$", new_from, text, flags=re.M)


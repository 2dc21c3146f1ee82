"""keras-tlft: transfer learning and fine-tuning for Keras 3.

The public API. Names that need Keras, pluggy or the plugin registry are imported on first use,
so ``import keras_tlft`` (and with it ``keras-tlft list``, and every plugin that imports
``BackboneSpec`` from here) stays free of TensorFlow; ``dir(keras_tlft)`` and type checkers see
them all.

The code lives in packages, in the order data flows: ``backbones`` (what a backbone is, and the
plugins and registry that supply them), ``model`` (``build_model``, heads, and a model's backbone
cut into blocks), ``schedules`` (what trains when, as plain data), ``callbacks``
(``ProgressiveUnfreeze`` and its mechanics), ``training`` (``fine_tune``, ``fit_frozen``,
``lr_find``) and ``reporting`` (``inspect_backbone``, the bench engine), with the CLI on top. The
old flat paths (``keras_tlft.schedule``...) still import, as the same modules
(:mod:`keras_tlft._moved`).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from keras_tlft import _moved
from keras_tlft._files import atomic_path, atomic_write
from keras_tlft.backbones.preset_backbones import WeightsDownloadError
from keras_tlft.backbones.spec import (
    AmbiguousBackboneError,
    BackboneSpec,
    BlockRule,
    UnknownBackboneError,
)

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from keras_tlft.backbones.adapters import tokens_as_feature_map
    from keras_tlft.backbones.hookspecs import hookimpl
    from keras_tlft.backbones.registry import get_backbone, get_registry, list_backbones
    from keras_tlft.callbacks.drift import FeatureDrift
    from keras_tlft.callbacks.early_stopping import StageEarlyStopping
    from keras_tlft.callbacks.unfreeze import ProgressiveUnfreeze
    from keras_tlft.model import heads
    from keras_tlft.model.assembly import build_model
    from keras_tlft.model.blocks import parse_unfreeze
    from keras_tlft.model.graph import check_cacheable
    from keras_tlft.model.heads import parse_head_spec
    from keras_tlft.model.input_range import check_input_range
    from keras_tlft.reporting.report import inspect_backbone
    from keras_tlft.schedules.plan import plan_stages
    from keras_tlft.schedules.presets import (
        default_schedule,
        fine_tune_at,
        gradual,
        layer_decay,
        lp_ft,
        plateau,
        two_phase,
        ulmfit,
    )
    from keras_tlft.schedules.schedule import Schedule
    from keras_tlft.schedules.schedule_input import parse_schedule
    from keras_tlft.training.cache import fit_frozen
    from keras_tlft.training.history import join_histories
    from keras_tlft.training.lr_finder import LRFinderResult, lr_find
    from keras_tlft.training.recipes import fine_tune

__version__ = "0.2.0"

# Public names that are modules; no other public name is ever a module (see _moved.Package).
_PUBLIC_MODULES = ("heads",)

_LAZY = {
    "hookimpl": "keras_tlft.backbones.hookspecs",
    "get_backbone": "keras_tlft.backbones.registry",
    "get_registry": "keras_tlft.backbones.registry",
    "list_backbones": "keras_tlft.backbones.registry",
    "build_model": "keras_tlft.model.assembly",
    "heads": "keras_tlft.model.heads",
    "parse_head_spec": "keras_tlft.model.heads",
    "inspect_backbone": "keras_tlft.reporting.report",
    "parse_unfreeze": "keras_tlft.model.blocks",
    "ProgressiveUnfreeze": "keras_tlft.callbacks.unfreeze",
    "StageEarlyStopping": "keras_tlft.callbacks.early_stopping",
    "Schedule": "keras_tlft.schedules.schedule",
    "parse_schedule": "keras_tlft.schedules.schedule_input",
    "plan_stages": "keras_tlft.schedules.plan",
    "two_phase": "keras_tlft.schedules.presets",
    "fine_tune_at": "keras_tlft.schedules.presets",
    "gradual": "keras_tlft.schedules.presets",
    "default_schedule": "keras_tlft.schedules.presets",
    "check_input_range": "keras_tlft.model.input_range",
    "plateau": "keras_tlft.schedules.presets",
    "lp_ft": "keras_tlft.schedules.presets",
    "ulmfit": "keras_tlft.schedules.presets",
    "layer_decay": "keras_tlft.schedules.presets",
    "fine_tune": "keras_tlft.training.recipes",
    "fit_frozen": "keras_tlft.training.cache",
    "join_histories": "keras_tlft.training.history",
    "check_cacheable": "keras_tlft.model.graph",
    "lr_find": "keras_tlft.training.lr_finder",
    "LRFinderResult": "keras_tlft.training.lr_finder",
    "FeatureDrift": "keras_tlft.callbacks.drift",
    "tokens_as_feature_map": "keras_tlft.backbones.adapters",
}

__all__ = [  # spelled out (not *_LAZY) so that linters and type checkers read it
    "AmbiguousBackboneError",
    "BackboneSpec",
    "BlockRule",
    "FeatureDrift",
    "LRFinderResult",
    "ProgressiveUnfreeze",
    "Schedule",
    "StageEarlyStopping",
    "UnknownBackboneError",
    "WeightsDownloadError",
    "atomic_path",
    "atomic_write",
    "build_model",
    "check_cacheable",
    "check_input_range",
    "default_schedule",
    "fine_tune",
    "fine_tune_at",
    "fit_frozen",
    "get_backbone",
    "get_registry",
    "gradual",
    "heads",
    "hookimpl",
    "inspect_backbone",
    "join_histories",
    "layer_decay",
    "list_backbones",
    "lp_ft",
    "lr_find",
    "parse_head_spec",
    "parse_schedule",
    "parse_unfreeze",
    "plan_stages",
    "plateau",
    "tokens_as_feature_map",
    "two_phase",
    "ulmfit",
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        if f"keras_tlft.{name}" in _moved.MOVED:  # an old module path: keras_tlft.registry...
            return importlib.import_module(f"keras_tlft.{name}")
        raise AttributeError(f"module 'keras_tlft' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name in _PUBLIC_MODULES else getattr(mod, name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted([*__all__, "__version__"])


_moved.install(sys.modules[__name__])

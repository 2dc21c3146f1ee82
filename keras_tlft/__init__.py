"""keras-tlft: transfer learning and fine-tuning for Keras 3.

The public API. Names that need Keras, pluggy or the plugin registry are imported on first use,
so ``import keras_tlft`` (and with it ``keras-tlft list``, and every plugin that imports
``BackboneSpec`` from here) stays free of TensorFlow; ``dir(keras_tlft)`` and type checkers see
them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from keras_tlft._files import atomic_path, atomic_write
from keras_tlft.preset_backbones import WeightsDownloadError
from keras_tlft.spec import (
    AmbiguousBackboneError,
    BackboneSpec,
    BlockRule,
    UnknownBackboneError,
)

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from keras_tlft import heads
    from keras_tlft.adapters import tokens_as_feature_map
    from keras_tlft.assembly import build_model
    from keras_tlft.blocks import parse_unfreeze
    from keras_tlft.cache import fit_frozen
    from keras_tlft.drift import FeatureDrift
    from keras_tlft.early_stopping import StageEarlyStopping
    from keras_tlft.graph import check_cacheable
    from keras_tlft.heads import parse_head_spec
    from keras_tlft.history import join_histories
    from keras_tlft.hookspecs import hookimpl
    from keras_tlft.input_range import check_input_range
    from keras_tlft.lr_finder import LRFinderResult, lr_find
    from keras_tlft.plan import plan_stages
    from keras_tlft.presets import (
        default_schedule,
        fine_tune_at,
        gradual,
        layer_decay,
        lp_ft,
        plateau,
        two_phase,
        ulmfit,
    )
    from keras_tlft.recipes import fine_tune
    from keras_tlft.registry import get_backbone, get_registry, list_backbones
    from keras_tlft.report import inspect_backbone
    from keras_tlft.schedule import Schedule
    from keras_tlft.schedule_input import parse_schedule
    from keras_tlft.unfreeze import ProgressiveUnfreeze

__version__ = "0.2.0"

_LAZY = {
    "hookimpl": "keras_tlft.hookspecs",
    "get_backbone": "keras_tlft.registry",
    "get_registry": "keras_tlft.registry",
    "list_backbones": "keras_tlft.registry",
    "build_model": "keras_tlft.assembly",
    "heads": "keras_tlft.heads",
    "parse_head_spec": "keras_tlft.heads",
    "inspect_backbone": "keras_tlft.report",
    "parse_unfreeze": "keras_tlft.blocks",
    "ProgressiveUnfreeze": "keras_tlft.unfreeze",
    "StageEarlyStopping": "keras_tlft.early_stopping",
    "Schedule": "keras_tlft.schedule",
    "parse_schedule": "keras_tlft.schedule_input",
    "plan_stages": "keras_tlft.plan",
    "two_phase": "keras_tlft.presets",
    "fine_tune_at": "keras_tlft.presets",
    "gradual": "keras_tlft.presets",
    "default_schedule": "keras_tlft.presets",
    "check_input_range": "keras_tlft.input_range",
    "plateau": "keras_tlft.presets",
    "lp_ft": "keras_tlft.presets",
    "ulmfit": "keras_tlft.presets",
    "layer_decay": "keras_tlft.presets",
    "fine_tune": "keras_tlft.recipes",
    "fit_frozen": "keras_tlft.cache",
    "join_histories": "keras_tlft.history",
    "check_cacheable": "keras_tlft.graph",
    "lr_find": "keras_tlft.lr_finder",
    "LRFinderResult": "keras_tlft.lr_finder",
    "FeatureDrift": "keras_tlft.drift",
    "tokens_as_feature_map": "keras_tlft.adapters",
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
        raise AttributeError(f"module 'keras_tlft' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if name == "heads" else getattr(mod, name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted([*__all__, "__version__"])

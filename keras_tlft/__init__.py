"""keras-tlft: transfer learning and fine-tuning for Keras 3.

The public API. Names that need Keras are imported lazily, so ``import keras_tlft`` (and with it
``keras-tlft list``) stays free of TensorFlow.
"""

from __future__ import annotations

import importlib

from keras_tlft.hookspecs import hookimpl
from keras_tlft.registry import (
    AmbiguousBackboneError,
    BackboneSpec,
    BlockRule,
    UnknownBackboneError,
    get_backbone,
    get_registry,
    list_backbones,
)

__version__ = "0.1.0"

_LAZY = {
    "build_model": "keras_tlft.assembly",
    "WeightsDownloadError": "keras_tlft.assembly",
    "heads": "keras_tlft.heads",
    "parse_head_spec": "keras_tlft.heads",
    "inspect_backbone": "keras_tlft.report",
    "parse_unfreeze": "keras_tlft.blocks",
    "ProgressiveUnfreeze": "keras_tlft.unfreeze",
    "Schedule": "keras_tlft.schedule",
    "parse_schedule": "keras_tlft.schedule",
    "plan_stages": "keras_tlft.schedule",
    "two_phase": "keras_tlft.schedule",
    "fine_tune_at": "keras_tlft.schedule",
    "gradual": "keras_tlft.schedule",
    "plateau": "keras_tlft.schedule",
    "fit_frozen": "keras_tlft.cache",
    "join_histories": "keras_tlft.cache",
    "check_cacheable": "keras_tlft.cache",
}

__all__ = [
    "AmbiguousBackboneError",
    "BackboneSpec",
    "BlockRule",
    "UnknownBackboneError",
    "get_backbone",
    "get_registry",
    "hookimpl",
    "list_backbones",
    *_LAZY,
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_tlft' has no attribute {name!r}")
    mod = importlib.import_module(module)
    return mod if name == "heads" else getattr(mod, name)

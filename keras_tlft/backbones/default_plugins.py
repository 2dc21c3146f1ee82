"""keras-tlft's own heads and schedule presets, registered through the plugin hooks.

The host registers this module as the plugin ``keras_tlft``, exactly as an installed plugin is
registered, so a plugin's recipe and ours go through the same validation and show up the same way
in ``keras-tlft plugins``. Importing it imports no Keras.
"""

from __future__ import annotations

from keras_tlft.backbones.hookspecs import hookimpl

KERAS_TLFT_PLUGIN_API = 1


@hookimpl
def register_heads(register):
    """The head presets of :mod:`keras_tlft.heads`: ``gap``, ``vgg``, ``mlp_bn``, ``mlp``."""
    from keras_tlft.model.heads import PRESETS

    for name, factory in PRESETS.items():
        register(name, factory)


@hookimpl
def register_schedules(register):
    """The schedule presets of :mod:`keras_tlft.presets`: ``two_phase``, ``fine_tune_at``,
    ``gradual``, ``plateau``, ``lp_ft``, ``ulmfit``, ``layer_decay``."""
    from keras_tlft.schedules.presets import PRESETS

    for name, factory in PRESETS.items():
        register(name, factory)

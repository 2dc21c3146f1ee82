"""The plugin API: pluggy markers and the hook specifications.

A backbone source is a module (or object) with functions marked ``@hookimpl``, made known to
keras-tlft through a setuptools entry point in the ``keras_tlft`` group::

    [project.entry-points.keras_tlft]
    mysource = "my_package.backbones"

Our own keras.applications source is registered exactly that way, and keras-tlft's own heads and
schedule presets are registered through ``register_heads`` and ``register_schedules`` by
:mod:`keras_tlft.default_plugins`, exactly as a plugin's recipe would be.

A plugin may declare the plugin API version it was written for, as a module attribute::

    KERAS_TLFT_PLUGIN_API = 1

keras-tlft refuses (and reports) a plugin that declares a newer version than its own
:data:`PLUGIN_API_VERSION`; a plugin that declares none is assumed to be written for version 1.
"""

from __future__ import annotations

import pluggy

PROJECT = "keras_tlft"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# The version of this plugin API: the hooks below and what their `register` callables accept.
PLUGIN_API_VERSION = 1
# The module attribute through which a plugin declares the version it was written for.
PLUGIN_API_ATTRIBUTE = "KERAS_TLFT_PLUGIN_API"


@hookspec
def register_backbones(register):
    """Register backbones by calling ``register(spec)`` once per backbone.

    ``spec`` is a :class:`keras_tlft.BackboneSpec`: plain metadata (name, aliases, family, default
    input shape, parameter count, preprocessing mode, weights, block rules) plus a ``builder``
    callable that imports Keras and builds the model only when called. Keep imports of Keras,
    TensorFlow, keras-cv or keras-hub inside the builder: registration runs for
    ``keras-tlft list``, which must stay fast.

    ``register`` validates each spec as it is registered; an invalid or duplicate spec is
    recorded as a plugin failure (see ``keras-tlft plugins``), it never breaks the other plugins.
    """


@hookspec
def register_heads(register):
    """Register head presets by calling ``register(name, factory)`` once per preset.

    ``factory(num_classes) -> str`` returns a head spec (see :mod:`keras_tlft.heads`), such as
    ``"gap,dropout:0.2,dense:10:softmax"``; ``build_model(..., head=name)`` and
    ``keras-tlft inspect --head name`` then use it. keras-tlft's own presets (``gap``, ``vgg``,
    ``mlp``, ``mlp_bn``) are registered this way; a name already registered is refused and
    recorded as a failure of the plugin that registered it second.
    """


@hookspec
def register_schedules(register):
    """Register schedule presets by calling ``register(name, factory)`` once per preset.

    ``factory(**options) -> keras_tlft.Schedule``; the preset is then accepted wherever a
    schedule is (``ProgressiveUnfreeze("name:key=value")``, ``keras-tlft inspect --schedule``),
    with ``key=value`` arguments passed to the factory. keras-tlft's own presets
    (``two_phase``, ``fine_tune_at``, ``gradual``, ``plateau``, ``lp_ft``, ``ulmfit``,
    ``layer_decay``) are registered this way.
    """


@hookspec
def plugin_unavailable():
    """Why this plugin registers nothing now, or ``None`` when it is available.

    For a plugin whose library is missing: return the install command
    (``"keras-cv is not installed: pip install 'keras-tlft[keras-cv]'"``); ``keras-tlft plugins
    --verbose`` shows it next to the plugin's 0 backbones. Must not import the library.
    """

"""The plugin API: pluggy markers and the hook specifications.

A backbone source is a module (or object) with functions marked ``@hookimpl``, made known to
keras-tlft through a setuptools entry point in the ``keras_tlft`` group::

    [project.entry-points.keras_tlft]
    mysource = "my_package.backbones"

Our own keras.applications source is registered exactly that way.
"""

from __future__ import annotations

import pluggy

PROJECT = "keras_tlft"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


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

"""keras.applications as a keras-tlft backbone source.

Registered through the ``keras_tlft`` entry-point group, exactly as a third-party source would be.
Importing this module imports no Keras: specs are static data and each builder imports Keras only
when it is called. Parameter counts are ``include_top=False`` at the default input shape, as
``count_params()`` reports them (checked by the test suite for every entry).
"""

from __future__ import annotations

import functools

from keras_tlft import BackboneSpec, BlockRule, hookimpl
from keras_tlft_applications.architectures import ARCHITECTURES

SOURCE = "applications"
KERAS_TLFT_PLUGIN_API = 1  # the keras-tlft plugin API this plugin is written for


def build(constructor: str, input_shape, weights, include_top):
    """Build ``keras.applications.<constructor>``; imports Keras only now."""
    import keras

    fn = getattr(keras.applications, constructor)
    return fn(include_top=include_top, weights=weights, input_shape=tuple(input_shape))


def make_spec(arch) -> BackboneSpec:
    """The BackboneSpec for one row of ``ARCHITECTURES``."""
    return BackboneSpec(
        name=arch.name,
        builder=functools.partial(build, arch.constructor),
        source=SOURCE,
        family=arch.family,
        description=arch.description,
        aliases=(arch.constructor.lower(), *arch.aliases),
        default_input_shape=arch.default_input_shape,
        min_input_size=arch.min_input_size,
        params=arch.params,
        preprocessing=arch.preprocessing,
        weights=("imagenet",),
        blocks=tuple(BlockRule(*rule) for rule in arch.blocks),
    )


@hookimpl
def register_backbones(register):
    for arch in ARCHITECTURES:
        register(make_spec(arch))

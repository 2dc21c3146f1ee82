"""keras-cv's image backbones as a keras-tlft backbone source.

Registered through the ``keras_tlft`` entry-point group, exactly as a third-party source would be.
Importing this module imports neither Keras nor keras-cv: the specs are static data (see
:mod:`keras_tlft_keras_cv.architectures`) and each builder imports keras-cv only when called.
When keras-cv is not installed the hook registers nothing, so ``keras-tlft plugins`` lists this
plugin with 0 backbones; install it with ``pip install 'keras-tlft[keras-cv]'``.

Every backbone is built offline from explicit architecture arguments (keras-cv 0.9's own alias
constructors fetch their configuration from Kaggle). Pretrained weights load through keras-cv's
presets (``weights="imagenet"`` for ``resnet50_backbone`` loads the ``resnet50_imagenet`` preset),
which downloads from Kaggle once; offline that raises
:class:`keras_tlft.assembly.WeightsDownloadError`.
"""

from __future__ import annotations

import functools
import importlib.util

from keras_tlft.assembly import is_download_failure, is_weights_file, preset_download_error
from keras_tlft.hookspecs import hookimpl
from keras_tlft.registry import BackboneSpec, BlockRule
from keras_tlft_keras_cv.architectures import ARCHITECTURES, Architecture

SOURCE = "keras_cv"
REQUIREMENT = "keras-cv"
INSTALL_HINT = "pip install 'keras-tlft[keras-cv]'"
# Libraries whose exceptions mean "the preset could not be fetched", not "the model is wrong".


def is_available() -> bool:
    """Whether keras-cv is installed (checked without importing it, so without TensorFlow)."""
    return importlib.util.find_spec("keras_cv") is not None


def build(arch: Architecture, input_shape, weights, include_top):
    """Build one keras-cv backbone; imports keras-cv only now.

    ``weights`` is ``None`` (random initialization, offline), a weights file saved from the same
    architecture, or one of ``arch.weights`` (a keras-cv preset, downloaded once from Kaggle).
    """
    if include_top:
        raise ValueError(
            f"keras-cv backbones have no classifier top; build keras_cv:{arch.name} with "
            f"include_top=False and add a head. Received: include_top={include_top!r}"
        )
    keras_cv = _import_keras_cv()
    cls = getattr(keras_cv.models, arch.constructor)
    shape = tuple(input_shape)
    if weights is None or is_weights_file(weights):
        model = cls(**arch.config, include_rescaling=True, input_shape=shape)
        if weights is not None:
            model.load_weights(weights)
        return model
    preset = arch.weights[weights]
    try:
        return cls.from_preset(preset, input_shape=shape)
    except Exception as exc:
        if is_download_failure(exc):
            raise preset_download_error(f"{SOURCE}:{arch.name}", preset, weights, exc) from exc
        raise


def _import_keras_cv():
    try:
        import keras_cv
    except ImportError as exc:
        raise ImportError(
            f"The keras_cv backbones need keras-cv, which is not installed. Install it with "
            f"`{INSTALL_HINT}`. Received: {type(exc).__name__}: {exc}"
        ) from exc
    return keras_cv


def make_spec(arch: Architecture) -> BackboneSpec:
    """The BackboneSpec for one row of ``ARCHITECTURES``."""
    return BackboneSpec(
        name=arch.name,
        builder=functools.partial(build, arch),
        source=SOURCE,
        family=arch.family,
        description=arch.description,
        default_input_shape=arch.default_input_shape,
        min_input_size=arch.min_input_size,
        params=arch.params,
        # keras-cv backbones rescale inside themselves (include_rescaling=True).
        preprocessing="none",
        weights=tuple(arch.weights),
        blocks=tuple(BlockRule(*rule) for rule in arch.blocks),
    )


SPECS: tuple[BackboneSpec, ...] = tuple(make_spec(arch) for arch in ARCHITECTURES)


@hookimpl
def register_backbones(register):
    """Register every keras-cv image backbone, or nothing when keras-cv is not installed."""
    if not is_available():
        return
    for spec in SPECS:
        register(spec)

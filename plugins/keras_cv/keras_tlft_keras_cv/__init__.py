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
:class:`keras_tlft.preset_backbones.WeightsDownloadError`.
"""

from __future__ import annotations

import functools

from keras_tlft import BackboneSpec, hookimpl
from keras_tlft.backbones.preset_backbones import PresetLibrary
from keras_tlft_keras_cv.architectures import ARCHITECTURES, Architecture

SOURCE = "keras_cv"
KERAS_TLFT_PLUGIN_API = 1  # the keras-tlft plugin API this plugin is written for
INSTALL_HINT = "pip install 'keras-tlft[keras-cv]'"
LIBRARY = PresetLibrary(module="keras_cv", source=SOURCE, install_hint=INSTALL_HINT)


def is_available() -> bool:
    """Whether keras-cv is installed (checked without importing it, so without TensorFlow)."""
    return LIBRARY.is_installed()


def build(arch: Architecture, input_shape, weights, include_top):
    """Build one keras-cv backbone; imports keras-cv only now.

    ``weights`` is ``None`` (random initialization, offline), a weights file saved from the same
    architecture, or one of ``arch.weights`` (a keras-cv preset, downloaded once from Kaggle).
    """
    shape = tuple(input_shape)
    preset = arch.weights.get(weights) if isinstance(weights, str) else None

    def family():
        return getattr(LIBRARY.load().models, arch.constructor)

    return LIBRARY.build(
        arch.name,
        weights,
        include_top,
        construct=lambda: family()(**arch.config, include_rescaling=True, input_shape=shape),
        from_preset=lambda: family().from_preset(arch.weights[weights], input_shape=shape),
        preset=preset,
    )


def make_spec(arch: Architecture) -> BackboneSpec:
    """The BackboneSpec for one row of ``ARCHITECTURES``."""
    # keras-cv backbones rescale inside themselves (include_rescaling=True).
    return LIBRARY.spec(arch, functools.partial(build, arch), preprocessing="none",
                        weights=tuple(arch.weights))


SPECS: tuple[BackboneSpec, ...] = tuple(make_spec(arch) for arch in ARCHITECTURES)


@hookimpl
def register_backbones(register):
    """Register every keras-cv image backbone, or nothing when keras-cv is not installed."""
    if not is_available():
        return
    for spec in SPECS:
        register(spec)


@hookimpl
def plugin_unavailable():
    """Why nothing is registered: keras-cv is not installed (and the command that installs it)."""
    return None if is_available() else f"keras-cv is not installed: {INSTALL_HINT}"

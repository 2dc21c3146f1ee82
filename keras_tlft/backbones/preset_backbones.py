"""Helpers for backbone sources built on a library of presets (keras-cv, keras-hub, your own).

Such a source registers plain-data specs whose builders import the library only when called; a
builder makes the backbone from explicit architecture arguments when no pretrained weights are
asked for (offline) and from the library's preset when they are, and a preset that cannot be
downloaded raises :class:`WeightsDownloadError`, worded as a failed keras.applications download
is. Our keras-cv and keras-hub plugins are written with these helpers exactly as a third party's
would be (see ``docs/plugins.md``)::

    LIBRARY = PresetLibrary(module="keras_cv", source="keras_cv",
                            install_hint="pip install 'keras-tlft[keras-cv]'")

    def build(arch, input_shape, weights, include_top):
        family = lambda: getattr(LIBRARY.load().models, arch.constructor)
        return LIBRARY.build(
            arch.name, weights, include_top,
            construct=lambda: family()(**arch.config, input_shape=tuple(input_shape)),
            from_preset=lambda: family().from_preset(arch.preset, input_shape=input_shape),
            preset=arch.preset,
        )

Importing this module imports no Keras and no preset library.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keras_tlft.backbones.spec import BackboneSpec, BlockRule

__all__ = [
    "PresetLibrary",
    "WeightsDownloadError",
    "is_download_failure",
    "is_weights_file",
    "preset_download_error",
]


class WeightsDownloadError(RuntimeError):
    """Pretrained weights could not be downloaded (offline, firewalled, or a bad URL)."""


# Libraries whose exceptions mean "the file could not be fetched", not "the model is wrong".
_DOWNLOAD_MODULES = ("requests", "urllib3", "urllib", "http", "socket", "kagglehub",
                     "huggingface_hub")


def is_weights_file(weights) -> bool:
    """Whether ``weights`` names an existing file (rather than ``None`` or a weights name)."""
    return isinstance(weights, str) and os.path.exists(weights)


def is_download_failure(exc: Exception) -> bool:
    """Whether ``exc`` is a failed download: a network error, or an error raised by a download
    library (requests, urllib, kagglehub, huggingface_hub), or Keras's own "URL fetch failure"."""
    module = type(exc).__module__.split(".")[0]
    return (
        isinstance(exc, (OSError, ConnectionError))
        or module in _DOWNLOAD_MODULES
        or looks_like_download_failure(exc)
    )


def looks_like_download_failure(exc: Exception) -> bool:
    """Whether ``exc``'s message is that of a failed download (Keras's ``get_file``, urllib)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(k in text for k in ("URL fetch failure", "URLError", "HTTP Error", "urlopen"))


def download_reason(exc: Exception) -> str:
    """The useful end of a download error's first line."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(" -- ")[-1].strip()[-160:]


def preset_download_error(key: str, preset: str, weights: str, exc: Exception):
    """The :class:`WeightsDownloadError` for a keras-cv / keras-hub preset that could not be
    fetched, worded as a failed keras.applications download is. For plugin authors."""
    cache = os.path.join(
        os.path.expanduser(os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")), "models"
    )
    return WeightsDownloadError(
        f"Could not download preset {preset!r} ({weights!r} weights of {key}) from Kaggle: "
        f"{type(exc).__name__}: {download_reason(exc)}. Connect once so that kagglehub caches "
        f"it in {cache}/, pass weights=None to start from random weights, or pass "
        f"weights='path/to/backbone.weights.h5'."
    )


def application_download_error(key: str, weights, exc: Exception) -> WeightsDownloadError:
    """The :class:`WeightsDownloadError` for a weights file Keras's ``get_file`` could not fetch
    (keras.applications and any builder that downloads through it)."""
    url = re.search(r"https?://\S+?(?=[:\s]|$)", str(exc))
    filename = os.path.basename(url.group(0)) if url else f"the {weights!r} weights file"
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")
    return WeightsDownloadError(
        f"Could not download {filename} ({weights!r} weights of {key}): "
        f"{download_reason(exc)}. Put the file in {cache}/, pass weights=None to "
        f"start from random weights, or pass weights='path/to/weights.h5'."
    )


@dataclass(frozen=True)
class PresetLibrary:
    """A library of backbone presets, as a keras-tlft backbone source uses it.

    Args:
        module: the library's import name (``"keras_cv"``).
        source: the source name the plugin registers under (``"keras_cv"``).
        install_hint: the command that installs it (``"pip install 'keras-tlft[keras-cv]'"``).
        label: how messages name it; defaults to ``module`` with dashes (``"keras-cv"``).
    """

    module: str
    source: str
    install_hint: str
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.module.replace("_", "-")

    def is_installed(self) -> bool:
        """Whether the library is installed (checked without importing it, so without
        TensorFlow)."""
        return importlib.util.find_spec(self.module) is not None

    def spec(self, arch, builder: Callable, **fields) -> BackboneSpec:
        """The :class:`~keras_tlft.BackboneSpec` of one architecture row: ``name``, ``family``,
        ``description``, ``default_input_shape``, ``min_input_size``, ``params`` and ``blocks``
        (``(name, pattern[, after])`` tuples) are read from ``arch``; ``fields`` gives the rest
        (``preprocessing``, ``weights``, ``aliases``)."""
        return BackboneSpec(
            name=arch.name,
            builder=builder,
            source=self.source,
            family=arch.family,
            description=arch.description,
            default_input_shape=arch.default_input_shape,
            min_input_size=arch.min_input_size,
            params=arch.params,
            blocks=tuple(BlockRule(*rule) for rule in arch.blocks),
            **fields,
        )

    def load(self):
        """Import the library, or raise ``ImportError`` saying how to install it."""
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise ImportError(
                f"The {self.source} backbones need {self.name}, which is not installed. Install "
                f"it with `{self.install_hint}`. Received: {type(exc).__name__}: {exc}"
            ) from exc

    def build(
        self,
        name: str,
        weights,
        include_top: bool,
        *,
        construct: Callable[[], Any],
        from_preset: Callable[[], Any],
        preset: str | None,
    ):
        """The build skeleton of a preset-based backbone.

        ``weights`` is ``None`` (``construct()``: random initialization, offline), a weights
        file (``construct()``, then the file loaded into it) or a pretrained weights name
        (``from_preset()``; a failed download raises :class:`WeightsDownloadError` naming
        ``preset``). Preset backbones have no classifier top: ``include_top=True`` raises
        ``ValueError``.
        """
        if include_top:
            raise ValueError(
                f"{self.name} backbones have no classifier top; build {self.source}:{name} with "
                f"include_top=False and add a head. Received: include_top={include_top!r}"
            )
        if weights is None or is_weights_file(weights):
            model = construct()
            if weights is not None:
                model.load_weights(weights)
            return model
        try:
            return from_preset()
        except Exception as exc:
            if is_download_failure(exc):
                raise preset_download_error(
                    f"{self.source}:{name}", preset, weights, exc
                ) from exc
            raise

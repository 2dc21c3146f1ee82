"""Backbones from local ``.keras`` files, for people whose pretrained backbone is their own.

``build_model("path/to/backbone.keras", ...)`` and ``keras-tlft inspect path/to/backbone.keras``
route here: :func:`keras_tlft.registry.get_backbone` turns a path to an existing file into the
:class:`~keras_tlft.spec.BackboneSpec` that :func:`local_spec` describes.

Files load with ``keras.saving.load_model(path, safe_mode=True, compile=False)``: safe mode
refuses ``Lambda`` layers, whose serialized Python bytecode would run on load. The model is used
as it was saved, so a model saved with its classifier head keeps that head; save the backbone
alone (``keras.Model(model.input, model.get_layer("...").output)``) to fine-tune its features.
"""

from __future__ import annotations

import functools
import os
import zipfile

from keras_tlft.backbones.spec import BackboneSpec
from keras_tlft.checks import check_regular_file

SOURCE = "local"
SUFFIXES = (".keras",)


def is_local_path(name) -> bool:
    """Whether ``name`` names a local model file rather than a registered backbone: an existing
    file, or a string that ends in ``.keras`` or contains a path separator."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str):
        return False
    return os.path.isfile(name) or name.endswith(SUFFIXES) or os.sep in name


def local_spec(path) -> BackboneSpec:
    """The :class:`~keras_tlft.spec.BackboneSpec` of a Keras model saved at ``path``.

    The file is loaded once to read its input shape and parameter count. The spec's name is the
    file's stem, its source ``"local"``, its blocks derived from the layer names (see
    :func:`keras_tlft.blocks.derive_blocks`), its preprocessing ``"none"`` (put whatever the
    model expects inside the model before saving it), and its builder loads the file again.

    Args:
        path: a ``.keras`` file saved with ``model.save(path)``.

    Returns:
        A ``BackboneSpec`` whose ``builder`` returns the loaded model.

    Raises:
        ValueError: the file does not exist, is not a Keras model, or contains layers that safe
            mode refuses to load (``Lambda``).

    Example:
    ```python
    model = build_model("my_backbone.keras", num_classes=10)
    ```
    """
    path = os.fspath(path)
    check_model_file(path)
    stat = os.stat(path)
    return _cached_spec(os.path.abspath(path), path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _cached_spec(abspath: str, path: str, mtime_ns: int, size: int) -> BackboneSpec:
    """The spec of one version of one file: ``get_backbone`` is called more than once per
    command, and each call would otherwise load the file again."""
    model = load_local_model(path)
    shape = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ()
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            f"The model in {path!r} cannot be used as an image backbone: expected one input of "
            f"fixed shape (height, width, channels). Received: input_shape={model.input_shape}"
        )
    name = os.path.splitext(os.path.basename(path))[0]
    return BackboneSpec(
        name=name,
        builder=_LocalBuilder(path),
        source=SOURCE,
        family="local",
        description=f"Keras model loaded from {path}",
        default_input_shape=shape,
        min_input_size=min(shape[:2]),
        params=model.count_params(),
        preprocessing="none",
        weights=("file",),
        blocks=(),
    )


def load_local_model(path: str):
    """``keras.saving.load_model(path, safe_mode=True, compile=False)``, with an error that says
    what is wrong with the file."""
    check_model_file(path)
    return _load(path)


def check_model_file(path: str) -> None:
    """Raise ``ValueError`` unless ``path`` is an existing ``.keras`` archive."""
    if os.path.exists(path):  # a directory or a FIFO is named for what it is
        check_regular_file("name", path, "Model file")
    if not os.path.isfile(path):
        raise ValueError(
            f"No Keras model file at {path!r}: expected the path of a model saved with "
            f"`model.save('backbone.keras')`, or the name of a registered backbone (run "
            f"`keras-tlft list`). Received: name={path!r}"
        )
    if not path.endswith(SUFFIXES) or not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a Keras model file: expected a `.keras` archive saved with "
            f"`model.save('backbone.keras')`. Received: name={path!r}"
        )


def _load(path: str):
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ValueError(
                f"Refusing to load {path!r} in safe mode: it contains a Lambda layer, whose "
                f"Python bytecode would run on load. Replace the Lambda layer with a registered "
                f"custom layer and save the model again. Received: name={path!r}"
            ) from exc
        raise _not_a_model(path, exc) from exc
    except Exception as exc:
        raise _not_a_model(path, exc) from exc


def _not_a_model(path: str, exc: Exception) -> ValueError:
    return ValueError(
        f"Could not load {path!r} as a Keras model ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0][:200] if str(exc) else ''}): expected a `.keras` archive "
        f"saved with `model.save('backbone.keras')`. Received: name={path!r}"
    )


class _LocalBuilder:
    """``builder(input_shape, weights, include_top)`` for a local file: loads the file again.

    A local model is used at the input shape it was saved with; ``weights`` may be ``None`` (the
    file's own weights, which are what a local backbone is for) or a weights file to load on top.
    """

    def __init__(self, path: str):
        self.path = path

    def __call__(self, input_shape=None, weights=None, include_top=False):
        model = load_local_model(self.path)
        saved = tuple(model.input_shape[1:])
        if input_shape is not None and tuple(input_shape) != saved:
            raise ValueError(
                f"The model in {self.path!r} was saved for inputs of shape {saved}; it cannot be "
                f"rebuilt at another shape. Pass input_shape={saved} (or resize= to build_model). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if weights not in (None, "file"):
            model.load_weights(weights)
        return model

    def __repr__(self):
        return f"<load {self.path!r}>"

"""Conformance checks for backbone-plugin authors.

A plugin's own test suite can check every spec it registers in one call::

    import pytest
    from keras_tlft.testing import check_backbone_spec
    from my_plugin import SPECS

    @pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
    def test_spec_conforms(spec):
        check_backbone_spec(spec)

Every failure is an ``AssertionError`` whose message names the spec and says what to fix, so it
reads well in a pytest report. Importing this module does not import Keras; checking a spec with
``build=True`` does.
"""

from __future__ import annotations

from typing import Any, NoReturn

from keras_tlft.blocks import cut_into_blocks
from keras_tlft.spec import BackboneSpec, validate_spec

__all__ = ["check_backbone_spec"]

# Random images per check: two, so that a backbone that mixes up the batch axis fails.
_BATCH_SIZE = 2
_SEED = 1337


def check_backbone_spec(spec: BackboneSpec, *, build: bool = True, input_shape=None) -> dict:
    """Check that a :class:`~keras_tlft.spec.BackboneSpec` is one keras-tlft can use.

    The static checks always run: the spec's fields have the right types (the same validation
    ``register()`` applies), ``min_input_size`` is a positive int no larger than the default
    input, and block names are unique.

    With ``build=True`` (the default) the backbone is also built offline, with ``weights=None``
    and ``include_top=False``, and:

    - the builder returns a Keras model whose input has the requested shape;
    - ``spec.params``, when declared, equals the model's ``count_params()`` (compared only when
      the model is built at ``spec.default_input_shape``, where ``params`` is defined);
    - ``spec.blocks`` cut ``model.layers`` into non-empty, contiguous blocks that cover every
      layer in order: the first starts at layer 0 and the last ends at the last layer;
    - the spec's preprocessing (see :func:`keras_tlft.preprocessing.preprocessing_layer`) runs on
      a batch of random 0-255 images, and the backbone maps the result to a finite output.

    Args:
        spec: the spec to check.
        build: build the backbone and run the checks that need the model. ``False`` runs the
            static checks only, without importing Keras.
        input_shape: ``(height, width, channels)`` to build at; defaults to
            ``spec.default_input_shape``. A smaller shape makes the forward pass cheaper.

    Returns:
        A summary dict: ``name``, ``input_shape``, ``layers`` (the number of layers), ``params``
        (as counted; the declared value when not built), ``blocks`` (a list of
        :class:`keras_tlft.blocks.Block`; empty when not built) and ``output_shape``.

    Raises:
        AssertionError: the spec does not conform; the message says why.
    """
    label = _label(spec)
    problem = validate_spec(spec)
    if problem is not None:
        _fail(label, f"invalid spec: {problem}.")
    _check_static_fields(spec, label)

    shape = tuple(input_shape) if input_shape is not None else tuple(spec.default_input_shape)
    summary: dict[str, Any] = {
        "name": label,
        "input_shape": shape,
        "layers": None,
        "params": spec.params,
        "blocks": [],
        "output_shape": None,
    }
    if not build:
        return summary

    model = _build(spec, label, shape)
    layers = list(model.layers)
    summary["layers"] = len(layers)
    summary["params"] = _check_params(spec, label, model, shape)
    summary["blocks"] = _check_blocks(spec, label, layers)
    summary["output_shape"] = _check_forward_pass(spec, label, model, shape)
    return summary


def _label(spec: Any) -> str:
    name = getattr(spec, "name", None)
    source = getattr(spec, "source", "")
    if not isinstance(name, str):
        return repr(spec)
    return repr(f"{source}:{name}" if source else name)


def _fail(label: str, message: str, cause: BaseException | None = None) -> NoReturn:
    raise AssertionError(f"Backbone spec {label}: {message}") from cause


def _check_static_fields(spec: BackboneSpec, label: str) -> None:
    size = spec.min_input_size
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        _fail(label, f"min_input_size must be a positive int. Received: min_input_size={size!r}")
    height, width = spec.default_input_shape[:2]
    if size > min(height, width):
        _fail(
            label,
            f"min_input_size ({size}) is larger than default_input_shape "
            f"{spec.default_input_shape}; the default input must be a valid input.",
        )
    names = [rule.name for rule in spec.blocks]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        _fail(label, f"block names must be unique; repeated: {', '.join(duplicates)}.")


def _build(spec: BackboneSpec, label: str, shape: tuple):
    import keras

    try:
        model = spec.build(input_shape=shape, weights=None, include_top=False)
    except Exception as exc:
        _fail(
            label,
            f"builder raised {type(exc).__name__} when building offline with "
            f"input_shape={shape}, weights=None, include_top=False: {exc}",
            cause=exc,
        )
    if not isinstance(model, keras.Model):
        _fail(label, f"builder must return a keras.Model, received {type(model).__name__}.")
    built = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if built is None or len(built) != len(shape) or any(
        b is not None and b != s for b, s in zip(built, shape)
    ):
        _fail(
            label,
            f"builder ignored input_shape: asked for {shape}, the model's input is "
            f"{model.input_shape}.",
        )
    return model


def _check_params(spec: BackboneSpec, label: str, model, shape: tuple) -> int:
    counted = model.count_params()
    at_default = shape == tuple(spec.default_input_shape)
    if spec.params is not None and at_default and counted != spec.params:
        _fail(
            label,
            f"declared params={spec.params:,} but the model built at {shape} with "
            f"include_top=False has count_params()={counted:,} "
            f"(off by {counted - spec.params:+,}). Set params={counted}.",
        )
    return counted


def _check_blocks(spec: BackboneSpec, label: str, layers: list) -> list:
    try:
        blocks = cut_into_blocks(layers, spec.blocks)
    except ValueError as exc:
        _fail(label, f"block rules do not match the model's layers: {exc}", cause=exc)
    n = len(layers)
    if not blocks:
        _fail(label, "block rules cut the model into no blocks.")
    if blocks[0].first != 0:
        first = blocks[0]
        _fail(label, f"the first block {first.name!r} starts at layer {first.first}, not 0.")
    for i, block in enumerate(blocks):
        if block.last < block.first:
            _fail(
                label,
                f"block {block.name!r} is empty (layers {block.first} to {block.last}); "
                "each block needs at least one layer.",
            )
        if i and block.first != blocks[i - 1].last + 1:
            previous = blocks[i - 1]
            _fail(
                label,
                f"blocks {previous.name!r} (layers {previous.first}-{previous.last}) and "
                f"{block.name!r} (layers {block.first}-{block.last}) are not contiguous.",
            )
    if blocks[-1].last != n - 1:
        _fail(
            label,
            f"the last block {blocks[-1].name!r} ends at layer {blocks[-1].last}, but the model "
            f"has {n} layers (0 to {n - 1}).",
        )
    return blocks


def _check_forward_pass(spec: BackboneSpec, label: str, model, shape: tuple) -> tuple:
    import numpy as np
    from keras import ops

    images = np.random.default_rng(_SEED).uniform(0.0, 255.0, (_BATCH_SIZE, *shape))
    x = images.astype("float32")
    from keras_tlft.preprocessing import preprocessing_layer

    try:
        layer = preprocessing_layer(spec)
        if layer is not None:
            x = layer(x)
    except Exception as exc:
        _fail(
            label,
            f"preprocessing {_describe(spec.preprocessing)} raised {type(exc).__name__} on a "
            f"batch of 0-255 images of shape {images.shape}: {exc}",
            cause=exc,
        )
    try:
        outputs = model(x, training=False)
    except Exception as exc:
        _fail(
            label,
            f"the backbone raised {type(exc).__name__} on a preprocessed batch of shape "
            f"{images.shape}: {exc}",
            cause=exc,
        )
    if isinstance(outputs, (list, tuple, dict)):
        _fail(label, f"the backbone must have one output, received {type(outputs).__name__}.")
    values = ops.convert_to_numpy(outputs)
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        _fail(
            label,
            f"the backbone's output has {bad} non-finite values (NaN or inf) on preprocessed "
            f"0-255 images; check the preprocessing mode {_describe(spec.preprocessing)}.",
        )
    return tuple(values.shape)


def _describe(preprocessing) -> str:
    return repr(preprocessing) if isinstance(preprocessing, str) else "(custom callable)"

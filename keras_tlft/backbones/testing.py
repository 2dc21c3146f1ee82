"""Conformance checks for backbone-plugin authors.

A plugin's own test suite can check every spec it registers in one call::

    import pytest
    from keras_tlft.backbones.testing import check_backbone_spec
    from my_plugin import SPECS

    @pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
    def test_spec_conforms(spec):
        check_backbone_spec(spec)

and that importing the plugin module imports no Keras (``keras-tlft list`` stays fast)::

    from keras_tlft.backbones.testing import check_plugin_module

    def test_plugin_imports_no_keras():
        check_plugin_module("my_plugin")

Every failure is an ``AssertionError`` whose message names the spec and says what to fix, so it
reads well in a pytest report. Importing this module does not import Keras; checking a spec with
``build=True`` does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any, NoReturn

from keras_tlft.backbones.plugins import (
    HEAVY_MODULES,  # what a plugin must not import at import time
)
from keras_tlft.backbones.spec import BackboneSpec, BuilderResultError, validate_spec
from keras_tlft.model.blocks import cut_into_blocks

__all__ = ["HEAVY_MODULES", "check_backbone_spec", "check_plugin_module"]

# How much larger the second build is, to see that the builder honours input_shape.
_SHAPE_PROBE = 32

# Random images per check: two, so that a backbone that mixes up the batch axis fails.
_BATCH_SIZE = 2
_SEED = 1337


def check_backbone_spec(spec: BackboneSpec, *, build: bool = True, input_shape=None) -> dict:
    """Check that a :class:`~keras_tlft.spec.BackboneSpec` is one keras-tlft can use.

    The static checks always run, and they are exactly the ones ``register()`` applies
    (:func:`keras_tlft.spec.validate_spec`): field types, names without ``:`` or spaces,
    ``min_input_size`` no larger than the default input, unique block names, block patterns
    that compile, ``offline_weights`` among ``weights``.

    With ``build=True`` (the default) the backbone is also built offline, with ``weights=None``
    and ``include_top=False``, and:

    - the builder returns a Keras model whose input has the requested shape, and honours
      ``input_shape``: when checked at the default shape, a second build 32 pixels larger must
      have that larger input (a builder that cannot build at that size is not faulted);
    - ``spec.params``, when declared, equals the model's ``count_params()`` (compared only when
      the model is built at ``spec.default_input_shape``, where ``params`` is defined);
    - ``spec.blocks`` cut ``model.layers`` into non-empty, contiguous blocks that cover every
      layer in order: the first starts at layer 0 and the last ends at the last layer; and no
      block begins at a layer that the previous block's own pattern matches (overlapping rules
      leave a block of one layer and hand the rest of it to the next);
    - the spec's preprocessing (see :func:`keras_tlft.preprocessing.preprocessing_layer`) runs on
      a batch of random 0-255 images, and the backbone maps the result to one finite, 4-D
      output ``(batch, height, width, channels)``: the output contract every head relies on
      (token outputs: see :func:`keras_tlft.tokens_as_feature_map`).

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
    if shape == tuple(spec.default_input_shape):
        _check_honours_input_shape(spec, label, shape)
    return summary


def check_plugin_module(module: str) -> None:
    """Check that importing the plugin module ``module`` imports no Keras or TensorFlow.

    The module is imported in a fresh Python process (this one may have Keras loaded already);
    a plugin whose import pulls in any of :data:`HEAVY_MODULES` makes every ``keras-tlft list``
    and ``keras-tlft plugins`` take seconds. Move those imports into the builder.

    Raises:
        AssertionError: the import failed, or it imported a heavy module; the message names it.
    """
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(', '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        raise AssertionError(f"Plugin module {module!r} failed to import: {lines[-1]}")
    heavy = proc.stdout.strip()
    if heavy:
        raise AssertionError(
            f"Plugin module {module!r} imports {heavy} at import time, which makes every "
            "`keras-tlft list` and `keras-tlft plugins` slow; import it inside the builder "
            "instead (see docs/plugins.md)."
        )


def _label(spec: Any) -> str:
    name = getattr(spec, "name", None)
    source = getattr(spec, "source", "")
    if not isinstance(name, str):
        return repr(spec)
    return repr(f"{source}:{name}" if source else name)


def _fail(label: str, message: str, cause: BaseException | None = None) -> NoReturn:
    raise AssertionError(f"Backbone spec {label}: {message}") from cause


def _build(spec: BackboneSpec, label: str, shape: tuple):

    try:
        model = spec.build(input_shape=shape, weights=None, include_top=False)
    except BuilderResultError as exc:
        _fail(label, str(exc), cause=exc)
    except Exception as exc:
        _fail(
            label,
            f"builder raised {type(exc).__name__} when building offline with "
            f"input_shape={shape}, weights=None, include_top=False: {exc}",
            cause=exc,
        )
    _check_input_shape(label, model, shape)
    return model


def _check_input_shape(label: str, model, shape: tuple) -> None:
    built = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if built is None or len(built) != len(shape) or any(
        b is not None and b != s for b, s in zip(built, shape)
    ):
        _fail(
            label,
            f"builder ignored input_shape: asked for {shape}, the model's input is "
            f"{model.input_shape}. Build the model's input from the input_shape argument.",
        )


def _check_honours_input_shape(spec: BackboneSpec, label: str, shape: tuple) -> None:
    """Build once more, larger: a builder with a hard-coded input shape shows itself here."""
    other = (shape[0] + _SHAPE_PROBE, shape[1] + _SHAPE_PROBE, *shape[2:])
    try:
        model = spec.build(input_shape=other, weights=None, include_top=False)
    except Exception:
        return  # some architectures build at fixed sizes only; nothing to conclude
    _check_input_shape(label, model, other)


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
    _check_no_overlap(spec, label, layers, blocks)
    return blocks


def _check_no_overlap(spec: BackboneSpec, label: str, layers: list, blocks: list) -> None:
    """No block may begin at a layer that the previous block's own pattern matches.

    Rules such as ``stem: ^stem_`` then ``block1: ^(stem|block1)_`` cut the stem after its
    first layer and hand the rest to ``block1``; every block would still be non-empty and
    contiguous, so only the patterns show it.
    """
    for i in range(1, len(spec.blocks)):
        rule, previous = spec.blocks[i], spec.blocks[i - 1]
        if previous.after:
            continue  # the previous rule names the layer before its block, not its members
        matched = blocks[i].first - (1 if rule.after else 0)
        name = layers[matched].name
        if matched > blocks[i - 1].first and re.match(previous.pattern, name):
            size = blocks[i - 1].last - blocks[i - 1].first + 1
            _fail(
                label,
                f"block rules overlap: block {rule.name!r} begins at layer {matched} "
                f"({name!r}), which the previous block {previous.name!r}'s pattern "
                f"{previous.pattern!r} also matches, so {previous.name!r} keeps {size} "
                f"layer(s) and the rest of it goes to {rule.name!r}. Make {rule.name!r}'s "
                f"pattern {rule.pattern!r} match only layers of its own block.",
            )


def _check_forward_pass(spec: BackboneSpec, label: str, model, shape: tuple) -> tuple:
    import numpy as np
    from keras import ops

    images = np.random.default_rng(_SEED).uniform(0.0, 255.0, (_BATCH_SIZE, *shape))
    x = images.astype("float32")
    from keras_tlft.model.preprocessing import preprocessing_layer

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
    if values.ndim != 4:
        _fail(
            label,
            f"the backbone's output has shape {values.shape}; keras-tlft needs one 4-D feature "
            "map (batch, height, width, channels), which every head pools or flattens. For "
            "token outputs (batch, tokens, channels) return "
            "keras_tlft.tokens_as_feature_map(model) from the builder.",
        )
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

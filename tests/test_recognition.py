"""Blocks of a backbone the model does not carry a spec for (hand-built, or reloaded from a
``.keras`` file): recognised by structure, whatever the model's name, input size or width.

Every keras.applications architecture at two input sizes (and two widths where it has a width
argument), every keras-cv and keras-hub entry at one; the largest are built only with
``-m slow``.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_tlft as tlft
from keras_tlft import ProgressiveUnfreeze
from keras_tlft.blocks import cut_into_blocks
from keras_tlft.discovery import locate_backbone
from keras_tlft.registry import get_backbone, list_backbones

# Built in every run (a few seconds each on a 2-core CPU); every other case with -m slow.
FAST_APPLICATIONS = {("mobilenet_v2", 128), ("vgg16", 128), ("mobilenet_v3_small", 128)}
# Widths: keras.applications' ``alpha`` (the default and one other).
ALPHAS = {"MobileNet": (1.0, 0.5), "MobileNetV2": (1.0, 0.35), "MobileNetV3Small": (1.0, 0.75),
          "MobileNetV3Large": (1.0, 0.75)}


def _application_cases():
    from keras_tlft_applications.architectures import ARCHITECTURES

    cases = []
    for arch in ARCHITECTURES:
        smallest = max(arch.min_input_size, 75 if arch.family == "nasnet" else 32)
        sizes = (arch.default_input_shape[0], max(smallest, 96) + 32)
        for size in sizes:
            for alpha in ALPHAS.get(arch.constructor, (None,)):
                if arch.family == "nasnet" and size != arch.default_input_shape[0]:
                    continue  # NASNet builds only at its own size with include_top=False
                fast = (arch.name, size) in FAST_APPLICATIONS
                marks = () if fast else (pytest.mark.slow,)
                cases.append(pytest.param(arch.name, arch.constructor, size, alpha, marks=marks,
                                          id=f"{arch.name}-{size}-{alpha}"))
    return cases


def _wrapped(base):
    """A user's model around a hand-built backbone: nested, under the backbone's own name."""
    base.trainable = False
    inputs = keras.Input(base.input_shape[1:])
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)) \
        if len(base.output_shape) == 4 else base(inputs, training=False)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))


def _assert_recognised(base, spec):
    found = locate_backbone(_wrapped(base), backbone=base.name)
    expected = cut_into_blocks(list(base.layers), spec.blocks)
    assert found.blocks_source == "structure", (base.name, found.blocks_source)
    assert [(b.name, b.first, b.last) for b in found.blocks] == \
        [(b.name, b.first, b.last) for b in expected]


@pytest.mark.parametrize("name, constructor, size, alpha", _application_cases())
def test_hand_built_application_is_recognised_by_structure(name, constructor, size, alpha):
    kwargs = {} if alpha is None else {"alpha": alpha}
    if constructor.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = False
    try:
        base = getattr(keras.applications, constructor)(
            include_top=False, weights=None, input_shape=(size, size, 3), **kwargs)
        _assert_recognised(base, get_backbone(f"applications:{name}"))
    finally:
        keras.backend.clear_session()
        gc.collect()


def test_the_tutorials_mobilenet_v2_gets_the_registry_blocks_whatever_its_name():
    # The MobileNetV2 transfer-learning tutorial's model: Keras names it mobilenetv2_1.00_160.
    base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False,
                                          weights=None)
    assert base.name == "mobilenetv2_1.00_160"
    found = locate_backbone(_wrapped(base))
    assert found.blocks_source == "structure"
    assert found.blocks_spec.key == "applications:mobilenet_v2"
    assert len(found.blocks) == 19 and found.blocks[-1].name == "top"
    assert [layer.name for layer in found.layers[found.blocks[-1].first:]] == \
        ["Conv_1", "Conv_1_bn", "out_relu"]


def test_a_reloaded_build_model_model_trains_what_it_trained_before_saving(tmp_path):
    model = tlft.build_model("mobilenet_v2", 3, input_shape=(32, 32, 3), weights=None)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.arange(4) % 3
    history = model.fit(x, y, epochs=2, verbose=0,
                        callbacks=[ProgressiveUnfreeze({0: "none", 1: 2})])
    # The head, then the top two blocks (block_16 and the final 1x1 convolution) and the head:
    # 879,040 + 3,843.
    assert history.history["trainable_params"] == [3_843, 882_883]
    for name, value in (("m.keras", None), ("x.npy", x), ("y.npy", y)):
        model.save(tmp_path / name) if value is None else np.save(tmp_path / name, value)
    script = Path(__file__).parent / "helpers_unfreeze" / "reload_run.py"
    proc = subprocess.run(
        [sys.executable, str(script), "stages", *(str(tmp_path / n) for n in
                                                  ("m.keras", "x.npy", "y.npy", "out.json"))],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((tmp_path / "out.json").read_text()) == [3_843, 882_883]
    assert "19 blocks (recognised as applications:mobilenet_v2 by structure)" in proc.stdout


def test_a_model_of_no_registered_architecture_keeps_derived_blocks():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="stage1_conv")(inputs)
    x = keras.layers.Conv2D(2, 3, name="stage2_conv")(x)
    base = keras.Model(inputs, x, name="mobilenet_v2")  # a misleading name changes nothing
    found = locate_backbone(_wrapped(base))
    assert found.blocks_source == "derived"
    assert [b.name for b in found.blocks] == ["stage1", "stage2"]


# keras-cv and keras-hub: one build per entry, at a small size the entry accepts.
FAST_PLUGIN_ENTRIES = {"keras_cv:mobilenet_v3_small_backbone",
                       "keras_hub:mobilenet_v3_small_050_imagenet"}
# Not built even with -m slow: over 400M parameters, more memory than a test machine has.
HUGE = 400_000_000


def _plugin_cases(source):
    try:
        specs = list_backbones(source)
    except Exception:  # pragma: no cover - the plugin's library is not installed
        specs = []
    return [pytest.param(spec.key, marks=() if spec.key in FAST_PLUGIN_ENTRIES
                         else (pytest.mark.slow,), id=spec.key)
            for spec in specs if spec.blocks and (spec.params or 0) < HUGE]


@pytest.mark.parametrize("key", _plugin_cases("keras_cv") + _plugin_cases("keras_hub"))
def test_keras_cv_and_keras_hub_backbones_are_recognised_by_structure(key):
    spec = get_backbone(key)
    size = max(spec.min_input_size, 64)
    shape = spec.default_input_shape if spec.min_input_size > 64 else (size, size, 3)
    try:
        base = spec.build(input_shape=shape, weights=None)
        _assert_recognised(base, spec)
    finally:
        keras.backend.clear_session()
        gc.collect()

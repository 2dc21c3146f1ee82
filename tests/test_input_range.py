"""The input-range guard: fit_frozen, lr_find and fine_tune warn once when the first batch looks
like 0-1 (or -1..1) pixels for a model whose preprocessing expects 0-255, and stay quiet
otherwise."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers_unfreeze.tiny import backbone  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft.model.input_range import check_input_range, expected_input_range  # noqa: E402


def tiny_spec(preprocessing="tf"):
    def build(input_shape, weights, include_top):
        return backbone("tiny_backbone")

    return tlft.BackboneSpec(name="tiny_range", builder=build, preprocessing=preprocessing,
                             default_input_shape=(8, 8, 3), min_input_size=8, weights=())


def model_of(mode="tf", **kwargs):
    keras.utils.set_random_seed(0)
    model = tlft.build_model(tiny_spec(mode), input_shape=(8, 8, 3),
                             head="dense:2:softmax", weights=None, **kwargs)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return model


def images(n=16, scale=255.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 3)) * scale).astype("float32"), rng.integers(0, 2, n)


def range_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "expects raw 0-255 pixels" in str(w.message)]


@pytest.mark.parametrize("run", ["fit_frozen", "lr_find", "fine_tune"])
def test_zero_to_one_pixels_are_warned_once_with_the_fix(run):
    model = model_of()
    x, y = images(scale=1.0)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        if run == "fit_frozen":
            tlft.fit_frozen(model, x, y, epochs=1, batch_size=8, verbose=0)
            tlft.fit_frozen(model, x, y, epochs=1, batch_size=8, verbose=0)
        elif run == "lr_find":
            tlft.lr_find(model, x, y, batch_size=8, steps=3)
        else:  # its frozen epoch runs in fit_frozen, which checks again: one warning
            tlft.fine_tune(model, x, y, epochs=2, batch_size=8, verbose=0)
    messages = range_warnings(record)
    assert len(messages) == 1
    assert messages[0].startswith(f"{run}: the first batch's pixel values lie in [")
    assert "(scaled to 0-1)" in messages[0]
    assert "x * 255" in messages[0] and "preprocessing=False" in messages[0]
    assert "Received: x.min()=" in messages[0]


def test_minus_one_to_one_pixels_are_called_already_normalized():
    x, y = images(scale=2.0)
    with pytest.warns(UserWarning, match=r"already normalized to -1\.\.1"):
        tlft.fit_frozen(model_of(), x - 1.0, y, epochs=1, batch_size=8, verbose=0)


def test_a_tf_dataset_is_checked_on_its_first_batch():
    import tensorflow as tf

    x, y = images(scale=1.0)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.warns(UserWarning, match="expects raw 0-255 pixels"):
        tlft.fit_frozen(model_of(), ds, epochs=1, verbose=0)


@pytest.mark.parametrize("case", ["0-255 floats", "uint8", "preprocessing=False",
                                  "spec without preprocessing", "model without preprocessing"])
def test_no_false_warning(case):
    x, y = images()
    if case == "uint8":
        x = x.astype("uint8")
    if case == "preprocessing=False":
        model, x = model_of(preprocessing=False), x / 255.0
    elif case == "spec without preprocessing":
        model, x = model_of("none"), x / 255.0
    elif case == "model without preprocessing":  # a bn-only backbone, a model of one's own
        keras.utils.set_random_seed(0)
        inputs = keras.Input((8, 8, 3))
        features = backbone("bn_only")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(features))
        model.get_layer("bn_only").trainable = False
        model.compile("adam", "sparse_categorical_crossentropy")
        x = x / 255.0
    else:
        model = model_of()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tlft.fit_frozen(model, x, y, epochs=1, batch_size=8, verbose=0)
        tlft.lr_find(model, x, y, batch_size=8, steps=2)
    assert range_warnings(record) == []


def test_the_expected_range_survives_saving_through_the_preprocessing_layer(tmp_path):
    model = model_of()
    assert expected_input_range(model) == (0.0, 255.0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert expected_input_range(loaded) == (0.0, 255.0)
    assert check_input_range(loaded, images(scale=1.0)[0])
    assert expected_input_range(model_of(preprocessing=False)) is None

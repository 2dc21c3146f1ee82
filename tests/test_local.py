"""Backbones from local .keras files: keras_tlft.local, get_backbone's routing and the CLI."""

import json
import os
import subprocess
import sys

import pytest

from keras_tlft import build_model, get_backbone
from keras_tlft.local import is_local_path, local_spec

PY = sys.executable


def save_tiny_backbone(path, with_lambda=False):
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(4, 3, name="block1_conv")(inputs)
    if with_lambda:
        x = layers.Lambda(lambda t: t * 2.0, name="block1_double")(x)
    x = layers.Conv2D(8, 3, name="block2_conv")(x)
    model = keras.Model(inputs, x, name="tiny")
    model.save(path)
    return model


@pytest.fixture
def tiny_file(tmp_path):
    path = tmp_path / "my_backbone.keras"
    save_tiny_backbone(path)
    return str(path)


def test_local_spec_describes_the_saved_model(tiny_file):
    spec = local_spec(tiny_file)
    assert (spec.source, spec.name, spec.key) == ("local", "my_backbone", "local:my_backbone")
    assert spec.default_input_shape == (16, 16, 3)
    assert spec.params == 3 * 3 * 3 * 4 + 4 + 3 * 3 * 4 * 8 + 8
    assert spec.blocks == () and spec.preprocessing == "none"


def test_get_backbone_routes_paths_and_names(tiny_file):
    assert get_backbone(tiny_file).source == "local"
    assert get_backbone("vgg16").source == "applications"
    assert is_local_path("models/x.keras") and not is_local_path("applications:vgg16")


def test_build_model_with_a_local_backbone_keeps_its_weights(tiny_file):
    import keras
    import numpy as np

    saved = keras.saving.load_model(tiny_file)
    model = build_model(tiny_file, num_classes=3)
    backbone = model.get_layer("backbone")
    assert backbone.trainable is False
    assert model.output_shape == (None, 3)
    for a, b in zip(backbone.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_local_blocks_are_derived_from_layer_names(tiny_file):
    from keras_tlft.blocks import cut_into_blocks

    spec = local_spec(tiny_file)
    blocks = cut_into_blocks(spec.build().layers, spec.blocks)
    assert [b.name for b in blocks] == ["block1", "block2"]


def test_inspect_a_local_file_through_the_cli(tiny_file):
    proc = subprocess.run([PY, "-m", "keras_tlft", "inspect", tiny_file, "--unfreeze", "1",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["source"], doc["backbone"]) == ("local", "my_backbone")
    assert doc["total_params"] == 408 and doc["trainable_params"] == 296


def test_a_missing_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere.keras")
    with pytest.raises(ValueError, match="No Keras model file at .*nowhere.keras"):
        get_backbone(missing)


def test_a_text_file_renamed_keras_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    with pytest.raises(ValueError, match=r"is not a Keras model file: expected a `\.keras` "):
        local_spec(str(path))


def test_a_zip_that_is_no_model_is_a_clear_error(tmp_path):
    import zipfile

    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("hello.txt", "hi")
    with pytest.raises(ValueError, match="Could not load .*archive.keras.* as a Keras model"):
        local_spec(str(path))


def test_a_lambda_layer_is_refused_by_safe_mode(tmp_path):
    path = tmp_path / "with_lambda.keras"
    save_tiny_backbone(path, with_lambda=True)
    with pytest.raises(ValueError, match="Refusing to load .* in safe mode: it contains a Lambda"):
        local_spec(str(path))


def test_the_cli_reports_a_bad_file_on_one_line(tmp_path):
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    proc = subprocess.run([PY, "-m", "keras_tlft", "inspect", str(path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "is not a Keras model file" in proc.stderr and "Traceback" not in proc.stderr


def test_a_local_backbone_cannot_be_rebuilt_at_another_shape(tiny_file):
    with pytest.raises(ValueError, match=r"saved for inputs of shape \(16, 16, 3\)"):
        local_spec(tiny_file).build(input_shape=(32, 32, 3))

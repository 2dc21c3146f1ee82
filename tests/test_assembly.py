import keras
import numpy as np
import pytest

import keras_tlft as tlft
from keras_tlft.assembly import WeightsDownloadError, parse_input_shape
from keras_tlft.preprocessing import ImagePreprocessing, preprocessing_model


def test_build_model_assembles_preprocessing_backbone_and_head_with_the_backbone_frozen():
    model = tlft.build_model("mobilenet_v2", num_classes=10, input_shape=(96, 96, 3),
                             head="gap,dropout:0.2,dense:10:softmax", weights=None)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "preprocessing", "backbone", "head"]
    backbone = model.get_layer("backbone")
    assert backbone.trainable is False
    assert backbone._tlft_spec.name == "mobilenet_v2"
    head_params = sum(int(np.prod(v.shape)) for v in model.get_layer("head").weights)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == head_params == 1280 * 10 + 10
    assert model.count_params() == backbone.count_params() + head_params


def test_small_inputs_are_resized_up_to_the_backbones_minimum_inside_the_model():
    spec = tlft.get_backbone("mobilenet_v2")
    fake = tlft.BackboneSpec(name="needs75", builder=spec.builder, min_input_size=75,
                             preprocessing="tf")
    model = tlft.build_model(fake, num_classes=10, input_shape=(32, 32, 3), weights=None)
    assert model.get_layer("resize").get_config()["height"] == 75
    assert model.get_layer("backbone").input_shape == (None, 75, 75, 3)


def _fit_once_and_read_moving_mean(train_bn):
    from keras_tlft.blocks import apply_unfreeze, cut_into_blocks

    model = tlft.build_model("mobilenet_v2", num_classes=2, input_shape=(32, 32, 3),
                             weights=None)
    backbone = model.get_layer("backbone")
    blocks = cut_into_blocks(backbone.layers, backbone._tlft_spec.blocks)
    apply_unfreeze(backbone.layers, blocks, "all", train_bn=train_bn, container=backbone)
    bn = backbone.get_layer("bn_Conv1")
    before = keras.ops.convert_to_numpy(bn.moving_mean).copy()
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.zeros(8), epochs=1, verbose=0)
    return before, keras.ops.convert_to_numpy(bn.moving_mean)


def test_unfrozen_backbone_keeps_batchnorm_statistics_by_default():
    # Keras 3 passes the outer training flag to a nested model, whatever it was called with;
    # BatchNorm stays in inference mode because the unfreeze policy keeps it non-trainable.
    before, after = _fit_once_and_read_moving_mean(train_bn=False)
    np.testing.assert_array_equal(after, before)


def test_train_bn_lets_batchnorm_update_its_statistics():
    before, after = _fit_once_and_read_moving_mean(train_bn=True)
    assert not np.allclose(after, before)


@pytest.mark.parametrize(
    "mode, module",
    [("caffe", keras.applications.vgg16), ("tf", keras.applications.mobilenet_v2),
     ("torch", keras.applications.densenet)],
)
def test_preprocessing_matches_keras_preprocess_input(mode, module):
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = module.preprocess_input(x.copy())
    # build_model's plain-Keras preprocessing: float32 arithmetic, fused into x * scale + offset
    # (torch: within a few ulps of (x / 255 - mean) / std).
    got = keras.ops.convert_to_numpy(preprocessing_model(mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # The keras-tlft 0.1 layer, kept for files saved with it.
    got = keras.ops.convert_to_numpy(ImagePreprocessing(mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_build_model_preprocessing_is_plain_keras():
    model = tlft.build_model("vgg16", num_classes=3, input_shape=(32, 32, 3), weights=None)
    prep = model.get_layer("preprocessing")
    layers = [layer for layer in prep.layers if not isinstance(layer, keras.layers.InputLayer)]
    modules = {type(layer).__module__.split(".")[0] for layer in layers}
    assert modules == {"keras"}, [type(layer) for layer in layers]
    assert not any(isinstance(layer, ImagePreprocessing) for layer in model.layers)


def test_a_file_saved_with_the_old_preprocessing_layer_loads_after_importing_it(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    inputs = keras.Input((8, 8, 3))
    x = ImagePreprocessing("caffe", name="preprocessing")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))
    x = np.random.default_rng(3).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    model.save(tmp_path / "old.keras")
    np.save(tmp_path / "x.npy", x)
    script = Path(__file__).parent / "helpers_unfreeze" / "reload_run.py"
    proc = subprocess.run([sys.executable, str(script), "legacy", str(tmp_path / "old.keras"),
                           str(tmp_path / "x.npy"), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model.predict(x, verbose=0))


def test_model_saved_as_keras_file_reloads_with_its_preprocessing(tmp_path):
    model = tlft.build_model("vgg16", num_classes=3, input_shape=(32, 32, 3), weights=None)
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5)


def test_failed_weights_download_names_the_file_and_the_ways_out(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/w/vgg16_notop.h5: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr(keras.src.applications.vgg16.file_utils, "get_file", offline)
    with pytest.raises(WeightsDownloadError) as info:
        tlft.build_model("vgg16", num_classes=2, weights="imagenet")
    message = str(info.value)
    assert "Could not download vgg16_notop.h5" in message
    assert "Name or service not known" in message
    assert "weights=None" in message and str(tmp_path / "models") in message
    assert "\n" not in message


def test_unknown_weights_name_is_refused_before_building():
    with pytest.raises(ValueError, match=r"cannot load weights 'imagenet21k'.*\['imagenet'\]"):
        tlft.build_model("vgg16", num_classes=2, weights="imagenet21k")


@pytest.mark.parametrize("shape", [(224, 224), "224,224,3", "160x160", [96, 96, 1]])
def test_input_shape_forms(shape):
    assert len(parse_input_shape(shape)) == 3


@pytest.mark.parametrize("shape", [(0, 224, 3), "224,abc", (224.0, 224, 3), (1, 2, 3, 4)])
def test_bad_input_shape_is_refused_with_the_expected_form(shape):
    with pytest.raises(ValueError, match=r"expected \(height, width, channels\)"):
        parse_input_shape(shape)


def test_bad_augmentation_is_refused():
    with pytest.raises(ValueError, match="augmentation must be None, 'default' or a list"):
        tlft.build_model("vgg16", 2, weights=None, augmentation="strong")


def test_default_augmentation_sits_before_the_backbone():
    model = tlft.build_model("vgg16", 2, input_shape=(32, 32, 3), weights=None,
                             augmentation="default")
    names = [layer.name for layer in model.layers]
    assert names.index("augmentation") < names.index("backbone")

"""The BatchNorm policies, bn="frozen" | "affine" | "train", as a fit with ProgressiveUnfreeze,
build_model and fit_frozen apply them: exactly which BatchNorm weights move.

Runs on every backend (tests/test_backends.py) and on the oldest Keras and keras-nightly
(.ci/run's Keras matrix): Keras 3.15 overrides a nested training=False and 3.16 keeps it, and
every policy must train the same weights on both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import SHAPE, values  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.schedule import Schedule  # noqa: E402
from keras_tlft.schedule_input import parse_schedule  # noqa: E402

BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _backbone_spec(dropout=0.5):
    """A Conv + BatchNorm (+ Dropout) backbone, registered-spec style, for build_model."""

    def build(input_shape, weights=None, include_top=False):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.ReLU(name="relu")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="drop")(x)
        x = keras.layers.Conv2D(4, 1, name="top_conv")(x)
        return keras.Model(inputs, x)

    return tlft.BackboneSpec(name="tiny_bn", builder=build, preprocessing="none")


def _model(bn="frozen", dropout=0.5, seed=0):
    keras.utils.set_random_seed(seed)
    model = tlft.build_model(_backbone_spec(dropout), 2, head="gap,dense:2:softmax",
                             input_shape=SHAPE, weights=None, bn=bn)
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    return model


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    # Not centred: batch statistics differ from the initial moving ones (0 and 1).
    return rng.uniform(0, 3, (n, *SHAPE)).astype("float32"), rng.integers(0, 2, n)


def _bn(model):
    return model.get_layer("backbone").get_layer("bn")


def _bn_values(model) -> dict:
    bn = _bn(model)
    return {name: np.array(keras.ops.convert_to_numpy(getattr(bn, name))) for name in BN}


def _fit_with_policy(bn, model=None, epochs=1):
    model = model if model is not None else _model(bn)
    x, y = _data()
    before = _bn_values(model)
    kernel = values(model.get_layer("backbone").get_layer("conv").weights)
    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
              callbacks=[ProgressiveUnfreeze({0: "all"}, bn=bn)])
    after = _bn_values(model)
    moved = {name: not np.array_equal(before[name], after[name]) for name in BN}
    conv_moved = any(not np.array_equal(a, b) for a, b in zip(
        kernel.values(), values(model.get_layer("backbone").get_layer("conv").weights).values()))
    assert conv_moved  # the unfrozen backbone trained
    return model, moved


@pytest.mark.parametrize("bn, expected", [
    ("frozen", {"gamma": False, "beta": False, "moving_mean": False, "moving_variance": False}),
    ("affine", {"gamma": True, "beta": True, "moving_mean": False, "moving_variance": False}),
    ("train", {"gamma": True, "beta": True, "moving_mean": True, "moving_variance": True}),
])
def test_each_policy_moves_exactly_its_batchnorm_weights(bn, expected):
    _, moved = _fit_with_policy(bn)
    assert moved == expected


def test_affine_normalises_with_the_loaded_statistics_during_fit():
    model, _ = _fit_with_policy("affine")
    backbone = model.get_layer("backbone")
    bn = _bn(model)
    shape = tuple(backbone.input.shape[1:])  # build_model resized up to the minimum, 32
    x = np.random.default_rng(1).uniform(0, 3, (4, *shape)).astype("float32")
    conv = keras.ops.convert_to_numpy(backbone.get_layer("conv")(x))
    w = _bn_values(model)
    expected = w["gamma"] * (conv - w["moving_mean"]) / np.sqrt(
        w["moving_variance"] + bn.epsilon) + w["beta"]
    # As fit runs it (training=True), called inside an outer model as the backbone is:
    inner = keras.Model(backbone.input, bn.output)
    outer_input = keras.Input(shape)
    traced = keras.Model(outer_input, inner(outer_input))
    got = keras.ops.convert_to_numpy(traced(x, training=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bn, deterministic", [("affine", True), ("frozen", False),
                                                ("train", False)])
def test_affine_runs_the_whole_backbone_in_inference_mode_dropout_too(bn, deterministic):
    # Keras 2's base_model(x, training=False): the backbone's Dropout is off under affine;
    # under the other policies fit's training=True reaches it (and the BatchNorm under train).
    model, _ = _fit_with_policy(bn)
    x, _ = _data(4, seed=2)
    training = keras.ops.convert_to_numpy(model(x, training=True))
    inference = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.allclose(training, inference, rtol=1e-6, atol=1e-7) is deterministic


def test_affine_is_applied_again_after_a_reload(tmp_path):
    model, _ = _fit_with_policy("affine")
    path = tmp_path / "model.keras"
    model.save(path)
    # Keras keeps no inference mode in the file: the callback applies it again.
    reloaded = keras.saving.load_model(path, compile=False)
    reloaded.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    _, moved = _fit_with_policy("affine", model=reloaded)
    assert moved == {"gamma": True, "beta": True, "moving_mean": False,
                     "moving_variance": False}


def test_build_model_affine_keeps_statistics_in_the_keras_guide_recipe():
    # build_model(bn="affine"), then the Keras guide's `base_model.trainable = True` and fit,
    # without the callback: gamma and beta train, the moving statistics do not.
    model = _model("affine")
    model.get_layer("backbone").trainable = True
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = _bn_values(model)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = _bn_values(model)
    assert [not np.array_equal(before[k], after[k]) for k in BN] == [True, True, False, False]


def test_callback_warns_when_its_policy_differs_from_build_models():
    model = _model("affine")
    with pytest.warns(UserWarning, match=r"build_model\(bn='affine'\)"):
        ProgressiveUnfreeze({0: "none", 1: "all"}).set_model(model)


def test_fit_frozen_caches_a_backbone_with_dropout_under_affine():
    x, y = _data()
    model = _model("frozen")
    with pytest.raises(ValueError, match="draw random numbers"):
        tlft.fit_frozen(model, x, y, epochs=1, batch_size=8, verbose=0)
    history = tlft.fit_frozen(model, x, y, epochs=1, batch_size=8, verbose=0, bn="affine")
    assert history.epoch == [0]


def test_train_bn_is_the_old_spelling_of_bn_train(tmp_path):
    assert Schedule(stages={0: "all"}, train_bn=True).bn == "train"
    assert Schedule(stages={0: "all"}, train_bn=False).bn == "frozen"
    assert ProgressiveUnfreeze({0: "all"}, train_bn=True).schedule.bn == "train"
    assert parse_schedule("two_phase:bn=affine", train_bn=True).bn == "train"  # overrides
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"stages": {"0": "none", "2": "all"}, "train_bn": True}))
    schedule = Schedule.load(path)
    assert schedule.bn == "train" and schedule.to_json()["bn"] == "train"
    assert "train_bn" not in schedule.to_json()
    # A run saved before bn existed resumes: the fingerprint is the one train_bn gave.
    assert schedule.fingerprint() == _old_fingerprint({"trigger": "epoch", "stages": [
        {"epoch": 0, "unfreeze": "none"}, {"epoch": 2, "unfreeze": "all"}], "train_bn": True})


def _old_fingerprint(data) -> int:
    import zlib

    return zlib.crc32(json.dumps(data, sort_keys=True).encode()) & 0x7FFFFFFF


@pytest.mark.parametrize("kwargs, message", [
    ({"bn": "batch"}, "Invalid bn: expected 'frozen'"),
    ({"bn": True}, "Received: bn=True"),
    ({"train_bn": "yes"}, "Received: train_bn='yes'"),
    ({"bn": "affine", "train_bn": True}, "Received: bn='affine', train_bn=True"),
])
def test_bad_policies_get_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Schedule(stages={0: "all"}, **kwargs)


def test_build_model_rejects_an_unknown_policy():
    with pytest.raises(ValueError, match="Received: bn='affin'"):
        tlft.build_model(_backbone_spec(), 2, input_shape=SHAPE, weights=None, bn="affin")


@pytest.mark.heavy  # three builds of the real MobileNetV2 at 160x160: about 20 s
def test_inspect_affine_prints_the_tensorflow_tutorials_mobilenet_v2_counts(capsys):
    # The TensorFlow transfer-learning tutorial: MobileNetV2 at 160x160, a GAP + Dense(1) head,
    # fine-tuned from layer 100 with BatchNorm gamma/beta trainable: 1,862,721 trainable and
    # 396,544 non-trainable parameters.
    from keras_tlft.blocks import apply_unfreeze, cut_into_blocks
    from keras_tlft.cli import main

    args = ["inspect", "mobilenet_v2", "--input-shape", "160,160,3", "--head", "gap",
            "--num-classes", "1", "--unfreeze", "from:100", "--bn", "affine"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1,862,721" in out and "396,544" in out
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Keras's own counts of the same model, unfrozen the same way.
    model = tlft.build_model("mobilenet_v2", 1, head="gap", input_shape=(160, 160, 3),
                             weights=None, bn="affine")
    backbone = model.get_layer("backbone")
    apply_unfreeze(backbone.layers, cut_into_blocks(backbone.layers, backbone._tlft_spec.blocks),
                   "from:100", "affine", container=backbone)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert (report["trainable_params"], report["non_trainable_params"]) == (
        trainable, model.count_params() - trainable) == (1_862_721, 396_544)
    assert report["bn"] == "affine"

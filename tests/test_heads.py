import keras
import numpy as np
import pytest

from keras_tlft import heads
from keras_tlft.heads import build_head, parse_head_spec, resolve_head


def layer_summary(head_layers, input_shape=(7, 7, 512)):
    model = build_head(head_layers)
    model.build((None, *input_shape))
    out = []
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.layers.Dense):
            out.append((kind, layer.units, layer.activation.__name__))
        elif isinstance(layer, keras.layers.Dropout):
            out.append((kind, layer.rate))
        else:
            out.append((kind,))
    return out


def test_gap_head_is_pooling_then_the_classifier():
    assert layer_summary(resolve_head("gap", 10)) == [
        ("GlobalAveragePooling2D",), ("Dense", 10, "softmax")]


def test_binary_gap_head_ends_in_one_sigmoid_unit():
    assert layer_summary(resolve_head("gap", 1))[-1] == ("Dense", 1, "sigmoid")


def test_vgg_head_reproduces_vggs_classifier():
    assert layer_summary(resolve_head("vgg", 1000)) == [
        ("Flatten",), ("Dense", 4096, "relu"), ("Dense", 4096, "relu"),
        ("Dense", 1000, "softmax")]


def test_mlp_bn_head_reproduces_the_batchnorm_dropout_stack():
    def block(units):
        return [("BatchNormalization",), ("Dense", units, "relu"), ("Dropout", 0.5)]

    assert layer_summary(resolve_head("mlp_bn", 10)) == [
        ("Flatten",), *block(256), *block(128), *block(64), ("Dense", 10, "softmax")]


def test_mlp_head_is_dense_dropout_twice_then_softmax():
    assert layer_summary(parse_head_spec(heads.mlp(5, units=(512, 256), dropout=0.3))) == [
        ("Flatten",), ("Dense", 512, "relu"), ("Dropout", 0.3), ("Dense", 256, "relu"),
        ("Dropout", 0.3), ("Dense", 5, "softmax")]


def test_spec_string_builds_exactly_what_it_says():
    spec = "flatten,bn,dense:256:relu,dropout:0.5,dense:10:softmax"
    assert layer_summary(parse_head_spec(spec)) == [
        ("Flatten",), ("BatchNormalization",), ("Dense", 256, "relu"), ("Dropout", 0.5),
        ("Dense", 10, "softmax")]
    assert heads.format_head_spec(parse_head_spec(spec)) == spec


def test_spec_without_classifier_gets_one_for_num_classes():
    assert str(resolve_head("gap,dropout:0.2", 3)[-1]) == "dense:3:softmax"


def test_head_params_match_keras_count():
    model = build_head(resolve_head("vgg", 1000))
    model.build((None, 7, 7, 512))
    assert model.count_params() == 25088 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000


@pytest.mark.parametrize(
    "spec, words",
    [
        ("gap,dense", "Invalid head spec token 'dense'"),
        ("gap,dense:ten", "the number of units must be a positive integer"),
        ("gap,dropout:1.5", "the dropout rate must be in [0, 1)"),
        ("gap,dropout:x", "the dropout rate must be a number"),
        ("gap,dense:10:softmaxx", "unknown activation"),
        ("gap,,dense:2", "Invalid head spec token '<empty>'"),
        ("pool,dense:2", "Invalid head spec token 'pool'"),
        ("gap,dense:10:softmax:ones", "unknown initializer; use one of glorot_uniform"),
        ("gap,dense:10:softmax:zeros:x", "Invalid head spec token 'dense:10:softmax:zeros:x'"),
    ],
)
def test_bad_head_spec_names_the_token_and_the_valid_ones(spec, words):
    with pytest.raises(ValueError) as info:
        parse_head_spec(spec)
    assert words in str(info.value)
    assert ("Valid tokens: gap, gmp, flatten, bn, dropout:RATE, "
            "dense:UNITS[:ACTIVATION[:INITIALIZER]]") in str(info.value)
    assert f"Received: head={spec!r}" in str(info.value)


def test_preset_without_num_classes_is_refused():
    with pytest.raises(ValueError, match="The head preset 'gap' needs num_classes"):
        resolve_head("gap", None)


def test_classifier_disagreeing_with_num_classes_is_refused():
    with pytest.raises(ValueError, match="has 5 units but num_classes is 10"):
        resolve_head("gap,dense:5", 10)


def test_zero_initialised_classifier_predicts_uniformly_before_training():
    head = build_head(resolve_head(heads.gap(10, dropout=0.2, kernel_initializer="zeros"), 10))
    probabilities = head(np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype("float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probabilities), 0.1, rtol=1e-6)
    assert not keras.ops.convert_to_numpy(head.layers[-1].kernel).any()


def test_classifier_keeps_keras_glorot_initializer_by_default():
    head = build_head(resolve_head(heads.gap(10), 10))
    head.build((None, 3, 3, 8))
    assert type(head.layers[-1].kernel_initializer).__name__ == "GlorotUniform"
    assert keras.ops.convert_to_numpy(head.layers[-1].kernel).any()


@pytest.mark.parametrize("spec", ["gap,dense:10:softmax:zeros", "gap,dense:10::he_normal"])
def test_initializer_in_a_spec_round_trips(spec):
    layers = parse_head_spec(spec)
    assert heads.format_head_spec(layers) == spec
    assert layers[-1].activation == (None if "::" in spec else "softmax")


def test_gap_refuses_an_unknown_kernel_initializer():
    with pytest.raises(ValueError) as info:
        heads.gap(10, kernel_initializer="ones")
    assert "expected one of glorot_uniform" in str(info.value)
    assert "Received: kernel_initializer='ones'" in str(info.value)

"""The keras.applications plugin: every architecture listed, every spec conforms, blocks fit.

Also the tests of ``keras_tlft.testing.check_backbone_spec`` itself, on tiny models.
Building the largest architectures is marked ``slow`` (run them with ``-m slow``).
"""

import gc
import re
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from keras_tlft_applications import make_spec
from keras_tlft_applications.architectures import ARCHITECTURES

import keras_tlft.testing
from keras_tlft.blocks import Block, cut_into_blocks
from keras_tlft.registry import BackboneSpec, BlockRule, get_backbone, normalize
from keras_tlft.testing import check_backbone_spec

# The architectures whose conformance check takes longest on a 2-core CPU (about 6-14 s each,
# build plus a forward pass at the default resolution): together about half of this file's time.
SLOW = {
    "convnext_base",
    "convnext_large",
    "convnext_xlarge",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "nasnet_large",
    "resnet152",
}

NAMES = [arch.name for arch in ARCHITECTURES]


def _free_memory():
    keras.backend.clear_session()
    gc.collect()


def _application_constructors() -> set:
    return {
        name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    }


# --- Coverage of keras.applications and names ---------------------------------------------


def test_every_keras_application_is_listed():
    listed = {arch.constructor for arch in ARCHITECTURES}
    missing = sorted(_application_constructors() - listed)
    assert not missing, (
        f"keras.applications exports architectures the plugin does not list: {missing}; add a row "
        "for each to plugins/applications/keras_tlft_applications/architectures.py"
    )


def test_every_listed_constructor_exists_in_keras_applications():
    unknown = sorted({arch.constructor for arch in ARCHITECTURES} - _application_constructors())
    assert not unknown, f"not exported by keras.applications: {unknown}"


def test_the_slow_set_names_listed_entries():
    assert not SLOW - set(NAMES), SLOW - set(NAMES)


def test_names_and_aliases_are_unique():
    seen = {}
    for arch in ARCHITECTURES:
        spec = make_spec(arch)
        for name in {normalize(spec.name), *(normalize(a) for a in spec.aliases)}:
            assert name not in seen, f"{name!r} is used by both {seen[name]} and {arch.name}"
            seen[name] = arch.name
    assert len({arch.constructor for arch in ARCHITECTURES}) == len(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=NAMES)
def test_bare_name_and_constructor_alias_resolve(arch):
    spec = get_backbone(arch.name)
    assert spec.key == f"applications:{arch.name}"
    assert get_backbone(arch.constructor) is spec
    assert get_backbone(f"applications:{arch.constructor}") is spec


def test_constructor_alias_example():
    assert get_backbone("ResNet50V2").name == "resnet50_v2"
    assert get_backbone("resnet50v2").name == "resnet50_v2"


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=NAMES)
def test_spec_passes_the_static_checks(arch):
    summary = check_backbone_spec(get_backbone(arch.name), build=False)
    assert summary["params"] == arch.params
    assert summary["layers"] is None


# --- Conformance of every entry ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow if n in SLOW else pytest.mark.heavy) for n in NAMES],
)
def test_spec_conforms(name):
    spec = get_backbone(name)
    try:
        summary = check_backbone_spec(spec)
    finally:
        _free_memory()
    assert summary["params"] == spec.params
    assert [b.name for b in summary["blocks"]] == [rule.name for rule in spec.blocks]


# --- Blocks ---------------------------------------------------------------------------------


def _blocks(name):
    """The model and its blocks, built at the smallest input (the blocks do not depend on it)."""
    spec = get_backbone(name)
    model = spec.build(input_shape=(spec.min_input_size, spec.min_input_size, 3))
    return model, cut_into_blocks(model.layers, spec.blocks)


def _layer_names(model, block: Block) -> list:
    return [model.layers[i].name for i in block.indices()]


def test_vgg16_blocks_are_its_five_conv_blocks():
    model, blocks = _blocks("vgg16")
    assert [b.name for b in blocks] == [f"block{i}" for i in range(1, 6)]
    assert _layer_names(model, blocks[-1]) == [
        "block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"
    ]
    assert blocks[-1].first == len(model.layers) - 4
    for block in blocks[1:]:
        assert all(name.startswith(block.name + "_") for name in _layer_names(model, block))


def test_mobilenet_v2_has_stem_17_inverted_residual_blocks_and_top():
    model, blocks = _blocks("mobilenet_v2")
    names = [b.name for b in blocks]
    assert names == ["stem", *(f"block_{i}" for i in range(17)), "top"]
    assert model.layers[blocks[1].first].name.startswith("expanded_conv_")
    assert _layer_names(model, blocks[-1])[0] == "Conv_1"


def test_resnet50_conv5_block_holds_exactly_the_conv5_parameters():
    model, blocks = _blocks("resnet50")
    assert [b.name for b in blocks] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    conv5 = blocks[-1]
    expected = sum(x.count_params() for x in model.layers if x.name.startswith("conv5_"))
    assert sum(model.layers[i].count_params() for i in conv5.indices()) == expected
    assert expected > 0


def test_resnet50_v2_final_post_activation_joins_conv5():
    model, blocks = _blocks("resnet50_v2")
    assert [b.name for b in blocks] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert _layer_names(model, blocks[-1])[-2:] == ["post_bn", "post_relu"]


def test_inception_v3_has_11_mixed_blocks_after_the_stem():
    model, blocks = _blocks("inception_v3")
    stem, mixed = blocks[:2], blocks[2:]
    assert [b.name for b in stem] == ["stem_1", "stem_2"]
    assert [b.name for b in mixed] == [f"mixed{i}" for i in range(11)]
    for block in mixed:
        assert model.layers[block.last].name == block.name
    # Each half of the stem ends at its max pooling.
    assert all(isinstance(model.layers[b.last], keras.layers.MaxPooling2D) for b in stem)


# Layers Keras names automatically, whose counters depend on what was built before.
_AUTO_NAME = re.compile(
    r"^(input_layer|conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d"
    r"|concatenate|custom_scale_layer)(?:_(\d+))?$"
)


def _shift_counter(name: str, by: int = 100) -> str:
    match = _AUTO_NAME.match(name)
    return f"{match[1]}_{int(match[2] or 0) + by}" if match else name


@pytest.mark.parametrize("name", ["inception_v3", "inception_resnet_v2"])
def test_blocks_do_not_depend_on_layer_name_counters(name):
    # What a model built after others in the same Keras session looks like: conv2d_107 ...
    model, blocks = _blocks(name)
    shifted = [SimpleNamespace(name=_shift_counter(layer.name)) for layer in model.layers]
    assert sum(s.name != layer.name for s, layer in zip(shifted, model.layers)) > 100
    assert cut_into_blocks(shifted, get_backbone(name).blocks) == blocks


def test_efficientnet_b0_blocks_are_its_seven_stages():
    model, blocks = _blocks("efficientnet_b0")
    assert [b.name for b in blocks] == ["stem", *(f"block{i}" for i in range(1, 8)), "top"]
    for block in blocks[1:-1]:
        assert all(name.startswith(block.name) for name in _layer_names(model, block))


# --- keras_tlft.testing itself ------------------------------------------------------------

TINY_PARAMS = (3 * 3 * 3 * 4 + 4) + (3 * 3 * 4 * 8 + 8)  # two 3x3 convolutions: 112 + 296


def _tiny_builder(input_shape, weights, include_top):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
    x = keras.layers.Conv2D(8, 3, name="stage2_conv")(x)
    return keras.Model(inputs, x)


TINY_BLOCKS = (BlockRule("stage1", "^stage1_"), BlockRule("stage2", "^stage2_"))


def tiny_spec(**changes) -> BackboneSpec:
    fields = dict(
        name="tinynet",
        source="tests",
        builder=_tiny_builder,
        default_input_shape=(16, 16, 3),
        min_input_size=8,
        params=TINY_PARAMS,
        preprocessing="tf",
        blocks=TINY_BLOCKS,
    )
    fields.update(changes)
    return BackboneSpec(**fields)


def _failure(spec, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        check_backbone_spec(spec, **kwargs)
    message = str(info.value)
    assert message.startswith("Backbone spec 'tests:tinynet': "), message
    return message


def test_check_accepts_a_conforming_spec_and_summarizes_it():
    summary = check_backbone_spec(tiny_spec())
    assert summary["name"] == "'tests:tinynet'"
    assert summary["layers"] == 3
    assert summary["params"] == TINY_PARAMS
    assert summary["blocks"] == [Block("stage1", 0, 1), Block("stage2", 2, 2)]
    assert summary["input_shape"] == (16, 16, 3)
    assert summary["output_shape"] == (2, 12, 12, 8)


def test_check_at_another_input_shape_skips_the_params_comparison():
    summary = check_backbone_spec(tiny_spec(params=1), input_shape=(20, 20, 3))
    assert summary["output_shape"] == (2, 16, 16, 8)
    assert summary["params"] == TINY_PARAMS


def test_cli_check_build_compares_params_of_a_backbone_smaller_than_its_build_size():
    # `keras-tlft check --build` builds at 64 pixels or more; a 16x16 backbone is built at its
    # own default shape instead, where a wrong `params` is caught (it once printed "conform").
    from keras_tlft import cli

    reason = cli._check_one(tiny_spec(params=1), build=True)
    assert reason is not None and f"Set params={TINY_PARAMS}." in reason, reason
    assert cli._check_one(tiny_spec(), build=True) is None


@pytest.mark.parametrize("mode", ["none", "caffe", "tf", "torch", "rescale"])
def test_check_runs_every_preprocessing_mode(mode):
    check_backbone_spec(tiny_spec(preprocessing=mode))


def test_check_rejects_wrong_params():
    message = _failure(tiny_spec(params=TINY_PARAMS + 1))
    assert f"declared params={TINY_PARAMS + 1:,}" in message
    assert f"count_params()={TINY_PARAMS:,}" in message
    assert f"Set params={TINY_PARAMS}." in message


def test_check_rejects_block_rules_that_do_not_match_the_model():
    message = _failure(tiny_spec(blocks=(*TINY_BLOCKS, BlockRule("stage3", "^stage3_"))))
    assert "block rules do not match the model's layers" in message
    assert "Block 'stage3' has no start" in message and "'^stage3_'" in message


def test_check_rejects_a_builder_that_raises():
    def broken(input_shape, weights, include_top):
        raise RuntimeError("weights server unreachable")

    message = _failure(tiny_spec(builder=broken))
    assert "builder raised RuntimeError" in message
    assert "weights=None" in message and "weights server unreachable" in message


def test_check_rejects_a_builder_that_ignores_input_shape():
    def fixed(input_shape, weights, include_top):
        return _tiny_builder((32, 32, 3), weights, include_top)

    message = _failure(tiny_spec(builder=fixed))
    assert "builder ignored input_shape: asked for (16, 16, 3)" in message


def test_check_rejects_a_builder_that_returns_no_model():
    message = _failure(tiny_spec(builder=lambda **kwargs: "a model"))
    assert "builder must return a keras.Model, received str" in message


def test_check_rejects_mistyped_fields():
    message = _failure(tiny_spec(preprocessing="imagenet", params="408"))
    assert "invalid spec" in message
    assert "preprocessing must be one of" in message and "'imagenet'" in message
    assert "params must be a non-negative int" in message


def test_check_rejects_a_min_input_size_above_the_default_shape():
    message = _failure(tiny_spec(min_input_size=32), build=False)
    assert "min_input_size (32) is larger than default_input_shape (16, 16, 3)" in message


def test_check_rejects_repeated_block_names():
    rules = (BlockRule("stage", "^stage1_"), BlockRule("stage", "^stage2_"))
    message = _failure(tiny_spec(blocks=rules), build=False)
    assert "block names must be unique; repeated: stage" in message


def test_check_rejects_preprocessing_that_raises():
    def preprocessing():
        raise ValueError("no such mean")

    message = _failure(tiny_spec(preprocessing=preprocessing))
    assert "preprocessing (custom callable) raised ValueError" in message
    assert "no such mean" in message


def test_check_rejects_non_finite_outputs():
    def exploding(input_shape, weights, include_top):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
        x = keras.layers.Conv2D(8, 3, name="stage2_conv")(x)
        x = keras.layers.Rescaling(np.inf, name="stage2_overflow")(x)
        return keras.Model(inputs, x)

    message = _failure(tiny_spec(builder=exploding))
    assert "non-finite values (NaN or inf)" in message


def test_check_without_build_does_not_call_the_builder():
    def must_not_run(**kwargs):
        raise AssertionError("built")

    summary = check_backbone_spec(tiny_spec(builder=must_not_run), build=False)
    assert summary["layers"] is None and summary["blocks"] == []


@pytest.mark.parametrize(
    "blocks, expected",
    [
        ([Block("a", 1, 1), Block("b", 2, 2)], "the first block 'a' starts at layer 1, not 0"),
        ([Block("a", 0, 0), Block("b", 2, 2)], "blocks 'a' (layers 0-0) and 'b' (layers 2-2)"),
        ([Block("a", 0, 1), Block("b", 1, 2)], "are not contiguous"),
        ([Block("a", 0, 1), Block("b", 2, 1)], "block 'b' is empty"),
        ([Block("a", 0, 0), Block("b", 1, 1)], "the last block 'b' ends at layer 1"),
        ([], "cut the model into no blocks"),
    ],
)
def test_check_rejects_blocks_that_do_not_cover_the_layers(monkeypatch, blocks, expected):
    monkeypatch.setattr(keras_tlft.testing, "cut_into_blocks", lambda layers, rules: blocks)
    assert expected in _failure(tiny_spec())

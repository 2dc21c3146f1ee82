import keras
import pytest

from keras_tlft.blocks import (
    Block,
    apply_unfreeze,
    cut_into_blocks,
    derive_blocks,
    parse_unfreeze,
    unfrozen_layer_indices,
)
from keras_tlft.registry import BlockRule


def tiny_backbone():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="stage1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stage1_bn")(x)
    x = keras.layers.Conv2D(4, 3, name="stage2_conv")(x)
    x = keras.layers.BatchNormalization(name="stage2_bn")(x)
    x = keras.layers.Conv2D(8, 3, name="stage3_conv")(x)
    x = keras.layers.ReLU(name="stage3_relu")(x)
    return keras.Model(inputs, x, name="tiny")


RULES = (BlockRule("stage1", "^stage1_"), BlockRule("stage2", "^stage2_"),
         BlockRule("stage3", "^stage3_"))


@pytest.mark.parametrize(
    "text, kind, value",
    [("none", "none", None), ("ALL", "all", None), (2, "top", 2), ("3", "top", 3),
     (0, "none", None), ("from:100", "from", 100), ("from:block5_conv1", "from", "block5_conv1"),
     ("from:-4", "from", -4)],
)
def test_parse_unfreeze(text, kind, value):
    state = parse_unfreeze(text)
    assert (state.kind, state.value) == (kind, value)


@pytest.mark.parametrize("bad", ["some", "from:", "top2", -1, 1.5, None, True])
def test_parse_unfreeze_rejects_bad_specs_naming_the_valid_ones(bad):
    with pytest.raises((ValueError, TypeError)) as info:
        parse_unfreeze(bad)
    assert "from:INDEX|LAYER_NAME" in str(info.value)
    assert f"Received: unfreeze={bad!r}" in str(info.value)


def test_rules_cut_the_layers_into_contiguous_blocks_covering_all():
    model = tiny_backbone()
    blocks = cut_into_blocks(model.layers, RULES)
    assert blocks == [Block("stage1", 0, 2), Block("stage2", 3, 4), Block("stage3", 5, 6)]


def test_after_rules_start_a_block_after_the_named_layer():
    model = tiny_backbone()
    rules = (BlockRule("first", "x"), BlockRule("second", "^stage1_bn$", after=True))
    assert cut_into_blocks(model.layers, rules) == [Block("first", 0, 2), Block("second", 3, 6)]


def test_rules_that_do_not_fit_the_model_say_so():
    model = tiny_backbone()
    advice = r"Block 'stage9' has no start.*BackboneSpec\(blocks=\(\)\)"
    with pytest.raises(ValueError, match=advice):
        cut_into_blocks(model.layers, RULES + (BlockRule("stage9", "^stage9_"),))


def test_derived_blocks_group_numbered_prefixes():
    model = tiny_backbone()
    assert [b.name for b in derive_blocks(model.layers)] == ["stage1", "stage2", "stage3"]


def test_derived_blocks_fall_back_to_one_per_weighted_layer():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.Dense(3, name="dense_out")(x)
    model = keras.Model(inputs, x)
    assert derive_blocks(model.layers) == [Block("dense", 0, 1), Block("dense_out", 2, 2)]


def test_top_k_and_from_select_a_tail_of_layers():
    model = tiny_backbone()
    blocks = cut_into_blocks(model.layers, RULES)
    assert list(unfrozen_layer_indices(model.layers, blocks, 1)) == [5, 6]
    assert list(unfrozen_layer_indices(model.layers, blocks, "from:4")) == [4, 5, 6]
    assert list(unfrozen_layer_indices(model.layers, blocks, "from:stage2_bn")) == [4, 5, 6]
    assert list(unfrozen_layer_indices(model.layers, blocks, "all")) == list(range(7))
    assert list(unfrozen_layer_indices(model.layers, blocks, "none")) == []


def test_out_of_range_and_unknown_targets_name_the_fix():
    model = tiny_backbone()
    blocks = cut_into_blocks(model.layers, RULES)
    with pytest.raises(ValueError, match=r"has 3 blocks \(stage1, stage2, stage3\)"):
        unfrozen_layer_indices(model.layers, blocks, 4)
    with pytest.raises(ValueError, match=r"out of range: the backbone has 7 layers \(0 to 6\)"):
        unfrozen_layer_indices(model.layers, blocks, "from:7")
    with pytest.raises(ValueError, match="No layer named 'stage2_bm'.*Did you mean: stage2_bn"):
        unfrozen_layer_indices(model.layers, blocks, "from:stage2_bm")


def test_apply_unfreeze_keeps_batchnorm_frozen_unless_asked():
    model = tiny_backbone()
    model.trainable = False
    blocks = cut_into_blocks(model.layers, RULES)
    apply_unfreeze(model.layers, blocks, 2, container=model)
    trainable = {layer.name for layer in model.layers if layer.trainable}
    assert trainable == {"stage2_conv", "stage3_conv", "stage3_relu"}
    apply_unfreeze(model.layers, blocks, 2, train_bn=True, container=model)
    assert model.get_layer("stage2_bn").trainable
    apply_unfreeze(model.layers, blocks, "none", container=model)
    assert model.trainable_weights == []


@pytest.mark.parametrize("blocks", [[("a", "[")], [("a", "^stage1_"), ("b", "[")],
                                    [BlockRule("a", "(")]])
def test_an_invalid_block_pattern_is_refused_naming_it(blocks):
    from keras_tlft import ProgressiveUnfreeze

    with pytest.raises(ValueError) as info:
        ProgressiveUnfreeze("gradual", blocks=blocks)
    bad = blocks[-1]
    pattern = bad.pattern if isinstance(bad, BlockRule) else bad[1]
    message = str(info.value)
    assert f"The pattern {pattern!r} of block " in message
    assert "is not a valid regular expression" in message and "'^block3_'" in message
    assert "Received: BlockRule(name=" in message and f"pattern={pattern!r}" in message


def test_cutting_with_a_single_invalid_rule_is_refused_not_one_block():
    # The first rule's pattern only documents where block 0 starts; it is checked all the same.
    with pytest.raises(ValueError, match=r"The pattern '\[' of block 'a' is not a valid regular"):
        cut_into_blocks(tiny_backbone().layers, (BlockRule("a", "["),))


def test_a_block_pattern_that_is_no_string_is_refused():
    from keras_tlft import ProgressiveUnfreeze

    with pytest.raises(ValueError, match=r"The pattern 3 of block 'a' is not a string"):
        ProgressiveUnfreeze("gradual", blocks=[("a", 3)])


def test_feature_drift_refuses_an_invalid_block_pattern_too():
    import numpy as np

    from keras_tlft import FeatureDrift

    with pytest.raises(ValueError, match=r"The pattern '\[' of block 'a' is not a valid regular"):
        FeatureDrift(np.zeros((2, 8, 8, 3), "float32"), blocks=[("a", "[")])

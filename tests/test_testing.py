"""The conformance kit (keras_tlft.testing) catches the mistakes a plugin author really makes,
and agrees with register(): one set of static checks, so a spec the registry accepts passes
them and one the kit rejects statically is refused at registration too."""

import subprocess
import sys
import textwrap

import keras
import pytest

from keras_tlft import BackboneSpec, BlockRule, tokens_as_feature_map
from keras_tlft.registry import Registry, get_registry
from keras_tlft.testing import check_backbone_spec, check_plugin_module


def _build(input_shape, weights, include_top):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.Conv2D(8, 3, name="block1_conv")(x)
    x = keras.layers.ReLU(name="block1_relu")(x)
    return keras.Model(inputs, x)


RULES = (BlockRule("stem", "^stem_"), BlockRule("block1", "^block1_"))


def spec(**changes):
    fields = dict(name="tinynet", source="kit", builder=_build, default_input_shape=(16, 16, 3),
                  min_input_size=8, preprocessing="rescale", blocks=RULES)
    return BackboneSpec(**{**fields, **changes})


def failure(s, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        check_backbone_spec(s, **kwargs)
    return str(info.value)


def refused_at_registration(s) -> str:
    registry = Registry()
    registry.register(s, plugin="kit")
    assert len(registry) == 0
    return registry.failures[0].reason


def test_overlapping_block_rules_are_caught():
    # block1's pattern also matches stem_relu: the stem loses its last layer to block1.
    rules = (BlockRule("stem", "^stem_"), BlockRule("block1", "^(stem_relu|block1_)"))
    message = failure(spec(blocks=rules))
    assert "block rules overlap: block 'block1' begins at layer 2 ('stem_relu')" in message
    assert "'stem' keeps 2 layer(s)" in message  # the input and stem_conv


@pytest.mark.parametrize("pattern", ["^stem_[", "(block1"])
def test_an_invalid_regex_names_the_spec_and_the_block_in_the_kit_and_at_registration(pattern):
    bad = spec(blocks=(RULES[0], BlockRule("block1", pattern)))
    message = failure(bad, build=False)
    assert message.startswith("Backbone spec 'kit:tinynet': invalid spec: block 'block1': "
                              f"pattern {pattern!r} is not a valid regular expression (")
    assert f"block 'block1': pattern {pattern!r}" in refused_at_registration(bad)


def test_a_builder_that_ignores_input_shape_is_caught_at_the_default_shape():
    def fixed(input_shape, weights, include_top):
        return _build((16, 16, 3), weights, include_top)  # input_shape ignored

    message = failure(spec(builder=fixed))
    assert "builder ignored input_shape: asked for (48, 48, 3)" in message


def test_a_token_output_is_refused_with_the_adapter_named():
    def vit(input_shape, weights, include_top):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(8, 4, strides=4, name="stem_patches")(inputs)
        x = keras.layers.Reshape((-1, 8), name="block1_tokens")(x)
        return keras.Model(inputs, x)

    message = failure(spec(builder=vit))
    assert "output has shape (2, 16, 8)" in message and "4-D feature map" in message
    assert "keras_tlft.tokens_as_feature_map(model)" in message

    def adapted(input_shape, weights, include_top):
        return tokens_as_feature_map(vit(input_shape, weights, include_top))

    summary = check_backbone_spec(spec(builder=adapted, blocks=(
        BlockRule("stem", "^stem_"), BlockRule("block1", "^block1_"))))
    assert summary["output_shape"] == (2, 1, 16, 8)


def test_tokens_as_feature_map_lays_a_grid_out():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(5, 4, strides=4)(inputs)
    model = keras.Model(inputs, keras.layers.Reshape((4, 5))(x))
    assert tokens_as_feature_map(model, grid=(2, 2)).output.shape == (None, 2, 2, 5)
    with pytest.raises(ValueError, match=r"grid \(3, 2\) holds 6 cells but the model outputs 4"):
        tokens_as_feature_map(model, grid=(3, 2))


@pytest.mark.parametrize("field, value", [("name", "my net"), ("name", "zoo:net"),
                                          ("aliases", ("a b",)), ("aliases", ("x:y",))])
def test_names_with_a_colon_or_a_space_are_refused_by_both(field, value):
    bad = spec(**{field: value})
    assert "no ':', no spaces" in failure(bad, build=False)
    assert "no ':', no spaces" in refused_at_registration(bad)


@pytest.mark.parametrize("changes, words", [
    ({"min_input_size": 32}, "min_input_size (32) is larger than default_input_shape"),
    ({"blocks": (BlockRule("a", "^stem_"), BlockRule("a", "^block1_"))},
     "block names must be unique"),
    ({"weights": ("imagenet",), "offline_weights": ("laion",)}, "offline_weights must be"),
])
def test_what_the_kit_rejects_statically_register_refuses_too(changes, words):
    bad = spec(**changes)
    assert words in failure(bad, build=False)
    assert words in refused_at_registration(bad)


def test_every_registered_first_party_spec_passes_the_static_checks():
    registry = get_registry()
    assert registry.failures == []
    for s in registry:
        check_backbone_spec(s, build=False)


def test_the_advice_for_rules_that_do_not_fit_works_when_followed():
    message = failure(spec(blocks=(*RULES, BlockRule("block9", "^block9_"))))
    assert "BackboneSpec(blocks=())" in message
    summary = check_backbone_spec(spec(blocks=()))  # the advice, followed
    assert summary["blocks"]


def test_a_plugin_module_that_imports_keras_at_import_time_is_caught(tmp_path, monkeypatch):
    (tmp_path / "heavy_plugin.py").write_text("import keras\n")
    (tmp_path / "light_plugin.py").write_text(textwrap.dedent("""
        def build(input_shape, weights, include_top):
            import keras
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with pytest.raises(AssertionError, match="'heavy_plugin' imports keras, tensorflow"):
        check_plugin_module("heavy_plugin")
    check_plugin_module("light_plugin")
    with pytest.raises(AssertionError, match="'missing_plugin' failed to import"):
        check_plugin_module("missing_plugin")


def test_importing_the_kit_imports_no_keras():
    code = "import sys, keras_tlft.testing; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

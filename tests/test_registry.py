import pytest

from keras_tlft.plugins import PluginFailure
from keras_tlft.registry import (
    AmbiguousBackboneError,
    BackboneSpec,
    BlockRule,
    Registry,
    UnknownBackboneError,
    get_backbone,
    normalize,
)


def _builder(**kwargs):
    raise AssertionError("not built in these tests")


def spec(name, source="", **kw):
    return BackboneSpec(name=name, builder=_builder, source=source, **kw)


def test_source_qualified_name_always_resolves():
    assert get_backbone("applications:vgg16").name == "vgg16"


@pytest.mark.parametrize("name", ["vgg16", "VGG16", "vgg-16", "Vgg_16", "applications:VGG-16"])
def test_lookup_is_case_and_separator_insensitive(name):
    assert get_backbone(name).key == "applications:vgg16"


def test_constructor_name_is_an_alias():
    assert get_backbone("MobileNetV2").name == "mobilenet_v2"


def test_unknown_name_offers_the_closest_names():
    with pytest.raises(UnknownBackboneError) as info:
        get_backbone("vgg17")
    message = str(info.value)
    assert "Unknown backbone 'vgg17'" in message
    assert "vgg16" in message and "vgg19" in message
    assert "keras-tlft list" in message


def test_bare_name_registered_by_two_sources_lists_both_and_each_stays_reachable():
    registry = Registry()
    registry.register(spec("tinynet", source="alpha"), plugin="alpha")
    registry.register(spec("tinynet", source="beta"), plugin="beta")
    with pytest.raises(AmbiguousBackboneError) as info:
        registry.resolve("tinynet")
    assert "alpha:tinynet" in str(info.value) and "beta:tinynet" in str(info.value)
    assert registry.resolve("alpha:tinynet").source == "alpha"
    assert registry.resolve("beta:TinyNet").source == "beta"


def test_duplicate_registration_names_both_registrants_and_keeps_the_first():
    registry = Registry()
    registry.register(spec("tinynet", source="shared", description="first"))
    registry.register(spec("tinynet", source="shared", description="second"), plugin="shared")
    assert registry.resolve("tinynet").description == "first"
    (failure,) = registry.failures
    assert failure.plugin == "shared"
    assert "'<direct>'" in failure.reason and "'shared'" in failure.reason
    assert "registered twice" in failure.reason


def test_a_plugin_cannot_register_under_another_source():
    registry = Registry()
    registry.register(spec("vgg16", source="applications"), plugin="rogue")
    assert len(registry) == 0
    (failure,) = registry.failures
    assert failure == PluginFailure(
        "rogue",
        "backbone 'vgg16' declares source='applications', but plugin 'rogue' registers it; a "
        "spec's source is the name of the plugin that registers it: leave source empty or set "
        "source='rogue'",
    )


def test_a_first_party_backbone_keeps_its_bare_name_and_the_collision_is_listed():
    registry = Registry(first_party={"applications"})
    registry.register(spec("tinynet"), plugin="rogue")
    registry.register(spec("tinynet"), plugin="applications")
    assert registry.resolve("tinynet").key == "applications:tinynet"
    assert registry.resolve("rogue:tinynet").key == "rogue:tinynet"
    (collision,) = registry.collisions
    assert collision.keys == ("applications:tinynet", "rogue:tinynet")
    assert collision.message() == (
        "'tinynet' is registered by applications:tinynet, rogue:tinynet: it means the "
        "first-party applications:tinynet; use rogue:tinynet for the other"
    )


def test_source_defaults_to_the_plugin_name():
    registry = Registry()
    registry.register(spec("tinynet"), plugin="myplugin")
    assert registry.resolve("myplugin:tinynet").key == "myplugin:tinynet"


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"name": "x", "builder": "not callable"}, "builder must be callable"),
        ({"name": "", "builder": _builder}, "name must be a non-empty string"),
        ({"name": "x", "builder": _builder, "default_input_shape": (224, 224)}, "3 positive ints"),
        ({"name": "x", "builder": _builder, "params": -1}, "params must be"),
        ({"name": "x", "builder": _builder, "preprocessing": "bgr"}, "preprocessing must be"),
        ({"name": "x", "builder": _builder, "blocks": (("b1", "^b1"),)}, "BlockRule"),
        ({"name": "x", "builder": _builder, "weights": ("imagenet",),
          "offline_weights": ("imagenet21k",)}, "offline_weights must be a tuple of names from"),
    ],
)
def test_invalid_spec_is_recorded_with_the_reason(bad, words):
    registry = Registry()
    registry.register(BackboneSpec(**bad), plugin="sloppy")
    assert len(registry) == 0
    assert registry.failures[0].plugin == "sloppy"
    assert words in registry.failures[0].reason


def test_registering_something_that_is_not_a_spec_is_recorded():
    registry = Registry()
    registry.register({"name": "dict"}, plugin="wrongtype")
    assert registry.failures == [
        PluginFailure("wrongtype", "register() expects a BackboneSpec, received dict")
    ]


def test_a_hook_that_raises_is_recorded_and_the_rest_still_register():
    registry = Registry()

    def good(register):
        register(spec("goodnet"))

    def broken(register):
        register(spec("halfnet"))
        raise RuntimeError("boom")

    registry.collect("broken", broken)
    registry.collect("good", good)
    assert registry.resolve("goodnet").source == "good"
    assert any(f.plugin == "broken" and "RuntimeError: boom" in f.reason for f in registry.failures)


def test_strict_mode_raises_the_plugins_error(monkeypatch):
    monkeypatch.setenv("KERAS_TLFT_STRICT_PLUGINS", "1")
    registry = Registry()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(spec("a", source="s"), plugin="s")
        registry.register(spec("a", source="s"), plugin="s")


def test_strict_mode_raises_on_a_bare_name_collision(monkeypatch):
    monkeypatch.setenv("KERAS_TLFT_STRICT_PLUGINS", "1")
    registry = Registry()
    registry.register(spec("a"), plugin="p1")
    with pytest.raises(ValueError, match="'a' is registered by p1:a, p2:a: it is ambiguous"):
        registry.register(spec("a"), plugin="p2")


def test_normalize():
    assert normalize("EfficientNet-V2 S") == "efficientnetv2s"


def test_block_rules_are_part_of_the_spec():
    vgg = get_backbone("vgg16")
    assert [b.name for b in vgg.blocks] == ["block1", "block2", "block3", "block4", "block5"]
    assert all(isinstance(b, BlockRule) for b in vgg.blocks)


def test_plugin_warnings_rebuild_from_their_message_as_pickle_and_pytest_xdist_do():
    # pytest-xdist sends a worker's warnings to the controller as `cls(*warning.args)`; a
    # warning that cannot be rebuilt that way took the worker down (INTERNALERROR).
    import pickle

    from keras_tlft.registry import NameCollision, NameCollisionWarning, PluginWarning

    failure = PluginFailure("broken", "failed to load: ImportError: needs libfoo")
    collision = NameCollision("resnet", ("a:resnet", "b:resnet"), None)
    for warning, detail in ((PluginWarning(failure), "failure"),
                            (NameCollisionWarning(collision), "collision")):
        rebuilt = type(warning)(*warning.args)  # the message only: no detail
        assert type(rebuilt) is type(warning) and str(rebuilt) == str(warning)
        assert getattr(rebuilt, detail) is None
        pickled = pickle.loads(pickle.dumps(warning))  # pickle keeps the detail
        assert str(pickled) == str(warning)
        assert getattr(pickled, detail) == getattr(warning, detail)
    assert "'broken': failed to load" in str(PluginWarning(failure))

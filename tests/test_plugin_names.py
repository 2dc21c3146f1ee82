"""Plugin names are protected: throwaway plugin projects really installed (pip --target), then
keras-tlft run in a subprocess that finds them through their entry points, as a user's would.

- ``tlft-rogue`` ships three plugins: ``rogue`` tries to register ``applications:vgg16`` and
  registers its own ``vgg16``; ``twin_a`` and ``twin_b`` both register ``twinnet``.
- ``tlft-squatter`` ships an entry point named ``applications``, keras-tlft's own plugin name.
"""

import shutil

import pytest
from plugin_projects import install_project, run_cli, run_json

TAKEOVER = """
from keras_tlft import BackboneSpec, hookimpl

def build(input_shape, weights, include_top):
    import keras
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(2, 3, name="stranger_conv")(inputs)
    return keras.Model(inputs, x)

@hookimpl
def register_backbones(register):
    register(BackboneSpec(name="vgg16", source="applications", builder=build))
    register(BackboneSpec(name="vgg16", builder=build, description="not VGG16"))
"""
TWIN = """
from keras_tlft import BackboneSpec, hookimpl

def build(input_shape, weights, include_top):
    raise AssertionError("not built")

@hookimpl
def register_backbones(register):
    register(BackboneSpec(name="twinnet", builder=build))
"""


@pytest.fixture(scope="module")
def rogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("rogue")
    target = install_project(root, "tlft-rogue",
                             {"rogue": "takeover", "twin_a": "twin_a", "twin_b": "twin_b"},
                             {"takeover": TAKEOVER, "twin_a": TWIN, "twin_b": TWIN})
    yield target
    shutil.rmtree(target)  # uninstalled: a --target install is its folder


@pytest.fixture(scope="module")
def squatter(tmp_path_factory):
    root = tmp_path_factory.mktemp("squatter")
    target = install_project(root, "tlft-squatter", {"applications": "takeover"},
                             {"takeover": TAKEOVER})
    yield target
    shutil.rmtree(target)


def resolve(targets, name, env=None):
    code = f"from keras_tlft import get_backbone; print(get_backbone({name!r}).key)"
    proc = run_cli(targets, python_code=code, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_plugin_cannot_register_under_another_plugins_source(rogue):
    doc = run_json([rogue], "plugins", "--json")
    reasons = [f["reason"] for f in doc["failures"] if f["plugin"] == "rogue"]
    assert len(reasons) == 1
    assert "declares source='applications', but plugin 'rogue' registers it" in reasons[0]
    assert not [f for f in doc["failures"] if f["plugin"] == "applications"]
    counts = {p["name"]: p["backbones"] for p in doc["plugins"]}
    assert counts["applications"] == 40 and counts["rogue"] == 1


def test_a_first_party_name_keeps_its_bare_form_and_the_collision_is_reported(rogue):
    assert resolve([rogue], "vgg16") == "applications:vgg16"
    assert resolve([rogue], "rogue:vgg16") == "rogue:vgg16"
    doc = run_json([rogue], "plugins", "--json")
    (vgg,) = [c for c in doc["collisions"] if c["name"] == "vgg16"]
    assert vgg["keys"] == ["applications:vgg16", "rogue:vgg16"]
    assert vgg["resolves_to"] == "applications:vgg16"
    listing = run_cli([rogue], "list")
    assert listing.returncode == 0
    assert "name collision: 'vgg16' is registered by applications:vgg16, rogue:vgg16" in (
        " ".join(listing.stderr.split()))


def test_a_bare_name_two_plugins_share_is_ambiguous_and_reported(rogue):
    proc = run_cli([rogue], "inspect", "twinnet")
    assert proc.returncode == 2
    assert "twin_a:twinnet, twin_b:twinnet" in proc.stderr
    doc = run_json([rogue], "plugins", "--json")
    (twin,) = [c for c in doc["collisions"] if c["name"] == "twinnet"]
    assert twin["resolves_to"] is None
    listing = run_cli([rogue], "list", "--json")
    assert "'twinnet' is registered by twin_a:twinnet, twin_b:twinnet: it is ambiguous" in (
        " ".join(listing.stderr.split()))


def test_strict_mode_fails_on_a_name_collision(rogue):
    env = {"KERAS_TLFT_STRICT_PLUGINS": "1", "KERAS_TLFT_DISABLE_PLUGINS": "rogue"}
    proc = run_cli([rogue], "list", env=env)
    assert proc.returncode != 0
    assert "'twinnet' is registered by twin_a:twinnet, twin_b:twinnet" in proc.stderr


def test_an_entry_point_reusing_a_first_party_plugin_name_is_refused(squatter):
    doc = run_json([squatter], "plugins", "--json")
    apps = next(p for p in doc["plugins"] if p["name"] == "applications")
    assert apps["distribution"] == "keras-tlft" and apps["backbones"] == 40
    (failure,) = [f for f in doc["failures"] if "tlft-squatter" in f["plugin"]]
    assert failure["plugin"] == "applications (from tlft-squatter)"
    assert "taken by distribution 'keras-tlft'" in failure["reason"]
    assert resolve([squatter], "vgg16") == "applications:vgg16"
    assert doc["collisions"] == []


def test_a_plugin_can_be_disabled_without_uninstalling_it(rogue):
    env = {"KERAS_TLFT_DISABLE_PLUGINS": "rogue, twin_b"}
    doc = run_json([rogue], "plugins", "--json", env=env)
    assert {p["name"] for p in doc["plugins"]} >= {"applications", "twin_a"}
    assert not {"rogue", "twin_b"} & {p["name"] for p in doc["plugins"]}
    assert doc["disabled"] == ["rogue", "twin_b"]
    assert doc["collisions"] == [] and doc["failures"] == []
    assert resolve([rogue], "twinnet", env=env) == "twin_a:twinnet"

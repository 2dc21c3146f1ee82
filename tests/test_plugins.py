import json
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest

from keras_tlft import cli, plugins, registry

GOOD = """
from keras_tlft import hookimpl, BackboneSpec

def _build(input_shape, weights, include_top):
    raise AssertionError("not built")

@hookimpl
def register_backbones(register):
    register(BackboneSpec(name="goodnet", builder=_build, family="toy"))
"""
RAISES_ON_IMPORT = "raise ImportError('needs a package that is not installed')\n"
MISSPELT = """
from keras_tlft import hookimpl

@hookimpl
def register_backbone(register):
    pass
"""
WRONG_TYPE = """
from keras_tlft import hookimpl

@hookimpl
def register_backbones(register):
    register("resnet50")
"""


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    """Install throwaway plugin modules behind fake entry points of our group."""
    modules = {"tlft_good": GOOD, "tlft_broken": RAISES_ON_IMPORT,
               "tlft_misspelt": MISSPELT, "tlft_wrongtype": WRONG_TYPE}
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint(name.removeprefix("tlft_"), name, plugins.ENTRY_POINT_GROUP)
           for name in modules]
    monkeypatch.setattr(plugins, "_entry_points", lambda: eps)
    monkeypatch.setattr(registry, "_REGISTRY", None)
    yield
    for name in modules:
        sys.modules.pop(name, None)
    monkeypatch.setattr(registry, "_REGISTRY", None)


def test_broken_plugins_are_recorded_and_the_good_one_still_works(fake_plugins):
    with pytest.warns(UserWarning, match="keras-tlft plugin 'broken'"):
        reg = registry.get_registry()
    assert reg.resolve("goodnet").source == "good"
    reasons = {f.plugin: f.reason for f in reg.failures}
    assert "ImportError: needs a package that is not installed" in reasons["broken"]
    assert "unknown hook 'register_backbone'" in reasons["misspelt"]
    assert "expects a BackboneSpec, received str" in reasons["wrongtype"]


def test_strict_mode_raises_the_import_error(fake_plugins, monkeypatch):
    monkeypatch.setenv(plugins.STRICT_ENV, "1")
    with pytest.raises(ImportError, match="needs a package"):
        plugins.make_plugin_manager()


def test_cli_plugins_reports_failures_and_list_keeps_working(fake_plugins, capsys):
    assert cli.main(["plugins", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {p["name"]: p for p in doc["plugins"]}
    assert names["good"]["backbones"] == 1
    assert {f["plugin"] for f in doc["failures"]} == {"broken", "misspelt", "wrongtype"}
    assert cli.main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["key"] for row in listed] == ["good:goodnet"]


def test_first_party_plugin_is_loaded_through_the_entry_point():
    pm, failures, dists = plugins.make_plugin_manager()
    assert pm.has_plugin("applications")
    assert dists["applications"] == "keras-tlft"
    assert not failures


BAD_BUILDERS = """
from keras_tlft import hookimpl, BackboneSpec

@hookimpl
def register_backbones(register):
    register(BackboneSpec(name="strnet", builder=lambda **kwargs: "a model",
                          default_input_shape=(8, 8, 3), min_input_size=8))
    register(BackboneSpec(name="nonenet", builder=lambda **kwargs: None,
                          default_input_shape=(8, 8, 3), min_input_size=8))
"""


@pytest.mark.parametrize("name, returned", [("strnet", "str"), ("nonenet", "NoneType")])
def test_a_builder_that_returns_no_model_is_refused_naming_plugin_and_backbone(
        name, returned, tmp_path, monkeypatch):
    import keras_tlft as tlft

    (tmp_path / "tlft_badbuilders.py").write_text(textwrap.dedent(BAD_BUILDERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("badbuilders", "tlft_badbuilders", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: [ep])
    monkeypatch.setattr(registry, "_REGISTRY", None)
    try:
        with pytest.raises(TypeError) as info:
            tlft.build_model(name, 2, weights=None)
    finally:
        sys.modules.pop("tlft_badbuilders", None)
        monkeypatch.setattr(registry, "_REGISTRY", None)
    message = str(info.value)
    assert f"backbone {name!r} from plugin 'badbuilders' returned a {returned}" in message
    assert f"received {returned}" in message and "keras.Model" in message
    assert f"keras-tlft check badbuilders:{name}" in message and "Received: " in message

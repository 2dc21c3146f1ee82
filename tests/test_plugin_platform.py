"""The plugin platform end to end, with throwaway plugin projects really installed (pip --target)
and keras-tlft run in subprocesses: new-plugin, check, plugins --verbose, the plugin API
version, and the register_heads / register_schedules hooks."""

import json
import shutil
import subprocess

import pytest
from plugin_projects import PY, install, install_project, run_cli, run_json

SLOPPY = """
from keras_tlft import BackboneSpec, BlockRule, Schedule, hookimpl

def build(input_shape, weights, include_top):
    import keras
    inputs = keras.Input((32, 32, 3))  # input_shape ignored: a real mistake
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    return keras.Model(inputs, x)

@hookimpl
def register_backbones(register):
    register(BackboneSpec(name="sloppynet", builder=build, default_input_shape=(32, 32, 3),
                          min_input_size=8, blocks=(BlockRule("stem", "^stem_"),)))

@hookimpl
def register_heads(register):
    register("tiny_head", lambda num_classes: f"gap,dense:{num_classes}:softmax")
    register("gap", lambda num_classes: "flatten,dense:1")  # taken by keras-tlft: refused

@hookimpl
def register_schedules(register):
    register("warm", lambda epoch=3: Schedule(stages={0: "none", epoch: "all"}))
"""
FUTURE = """
from keras_tlft import hookimpl
KERAS_TLFT_PLUGIN_API = 99

@hookimpl
def register_backbones(register):
    pass
"""
HEAVY = """
import keras  # at import time: every `keras-tlft list` pays for it
from keras_tlft import hookimpl

@hookimpl
def register_backbones(register):
    pass
"""
ABSENT = """
from keras_tlft import hookimpl

@hookimpl
def register_backbones(register):
    pass

@hookimpl
def plugin_unavailable():
    return "zoolib is not installed: pip install zoolib"
"""


@pytest.fixture(scope="module")
def sloppy(tmp_path_factory):
    root = tmp_path_factory.mktemp("sloppy")
    target = install_project(
        root, "tlft-sloppy",
        {"sloppy": "sloppy", "future": "future", "heavy": "heavy", "absent": "absent"},
        {"sloppy": SLOPPY, "future": FUTURE, "heavy": HEAVY, "absent": ABSENT})
    yield target
    shutil.rmtree(target)


@pytest.mark.heavy  # several CLI processes, 20-55 s
def test_a_plugin_needing_a_newer_plugin_api_is_refused_and_reported(sloppy):
    doc = run_json([sloppy], "plugins", "--json")
    reasons = {f["plugin"]: f["reason"] for f in doc["failures"]}
    assert "needs keras-tlft plugin API 99, but this keras-tlft provides API 1" in (
        reasons["future"])
    assert "future" not in {p["name"] for p in doc["plugins"]}
    apps = next(p for p in doc["plugins"] if p["name"] == "applications")
    assert apps["api_version"] == 1


def test_a_plugin_importing_keras_at_import_time_is_reported(sloppy):
    doc = run_json([sloppy], "plugins", "--json")
    reasons = {f["plugin"]: f["reason"] for f in doc["failures"]}
    assert reasons["heavy"].startswith("imports keras")
    assert "slows every `keras-tlft list`" in reasons["heavy"]


@pytest.mark.heavy  # several CLI processes, 20-55 s
def test_plugins_verbose_shows_entry_point_module_load_time_names_and_why_0(sloppy):
    proc = run_cli([sloppy], "plugins", "--verbose", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "entry point  tlft_sloppy.sloppy" in text
    assert "tlft_sloppy/sloppy.py" in text and "load time" in text
    assert "backbones    1: sloppynet" in text
    assert "heads        tiny_head" in text and "schedules    warm" in text
    assert "why 0        zoolib is not installed: pip install zoolib" in text
    doc = run_json([sloppy], "plugins", "--json")
    absent = next(p for p in doc["plugins"] if p["name"] == "absent")
    assert absent["unavailable"] == "zoolib is not installed: pip install zoolib"
    assert absent["load_seconds"] >= 0 and absent["module"].endswith("absent.py")


@pytest.mark.heavy  # several CLI processes, 20-55 s
def test_a_plugins_head_and_schedule_presets_work_and_ours_stay_ours(sloppy):
    code = ("from keras_tlft.heads import resolve_head, format_head_spec\n"
            "from keras_tlft import parse_schedule\n"
            "print(format_head_spec(resolve_head('tiny_head', 3)))\n"
            "print(format_head_spec(resolve_head('gap', 3)))\n"
            "print(parse_schedule('warm:epoch=2').to_json()['stages'])\n")
    proc = run_cli([sloppy], python_code=code)
    assert proc.returncode == 0, proc.stderr
    tiny, gap, stages = proc.stdout.splitlines()
    assert tiny == "gap,dense:3:softmax" and gap == "gap,dense:3:softmax"
    assert "'2'" in stages or "2" in stages
    doc = run_json([sloppy], "plugins", "--json")
    reasons = [f["reason"] for f in doc["failures"] if f["plugin"] == "sloppy"]
    assert reasons == ["the head preset 'gap' is registered twice: by plugin 'keras_tlft' and "
                       "by plugin 'sloppy'; the first is kept"]
    ours = next(p for p in doc["plugins"] if p["name"] == "keras_tlft")
    assert ours["heads"] == ["gap", "mlp", "mlp_bn", "vgg"]
    assert ours["schedules"] == ["fine_tune_at", "gradual", "layer_decay", "lp_ft", "plateau",
                                 "two_phase", "ulmfit"]


@pytest.mark.heavy  # several CLI processes, 20-55 s
def test_check_builds_and_fails_with_a_table_of_what_fails(sloppy):
    proc = run_cli([sloppy], "check", "sloppy", "--build", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["checked"] == 1 and doc["plugins"] == ["sloppy"]
    problems = {f["backbone"]: f["problem"] for f in doc["failures"]}
    assert problems["sloppy:sloppynet"].startswith("builder ignored input_shape")
    assert problems[None].startswith("the head preset 'gap' is registered twice")
    table = run_cli([sloppy], "check", "sloppy", env={"COLUMNS": "200"})  # static: no build
    assert table.returncode == 1
    assert "1 failure(s)" in table.stdout and "'gap' is registered twice" in table.stdout


def test_check_of_an_unknown_plugin_is_bad_input(sloppy):
    proc = run_cli([sloppy], "check", "nosuch")
    assert proc.returncode == 2 and "No plugin named 'nosuch'" in proc.stderr


@pytest.mark.heavy  # several CLI processes, 20-55 s
def test_new_plugin_makes_a_project_whose_tests_pass_and_that_checks_clean(tmp_path):
    proc = run_cli([], "new-plugin", "mylab", "--directory", str(tmp_path / "mylab"))
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "mylab"
    target = install(project, tmp_path / "site")
    tests = subprocess.run(
        [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
        capture_output=True, text=True, cwd=project, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(target)})
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
    doc = run_json([target], "plugins", "--json")
    mylab = next(p for p in doc["plugins"] if p["name"] == "mylab")
    assert mylab["distribution"] == "keras-tlft-mylab" and mylab["api_version"] == 1
    assert mylab["names"] == ["mylab_convnet"]
    check = run_json([target], "check", "mylab", "--build", "--json")
    assert check == {"plugins": ["mylab"], "checked": 1, "built": True, "failures": []}
    again = run_cli([], "new-plugin", "mylab", "--directory", str(project))
    assert again.returncode == 2 and "exists" in again.stderr

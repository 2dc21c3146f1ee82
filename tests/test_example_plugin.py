"""The example plugin (plugins/example) installed as a stranger would install it, end to end.

The plugin is built and installed with pip into a temporary ``--target`` folder, never into the
running environment; the CLI then runs in a subprocess with that folder on ``PYTHONPATH``, where
keras-tlft finds the plugin through its ``keras_tlft`` entry point (its ``.dist-info``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_projects import install

from keras_tlft.testing import check_backbone_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "example"
PY = sys.executable


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A folder holding the installed example plugin (``pip install --target``)."""
    target = install(EXAMPLE, tmp_path_factory.mktemp("example_site"))
    assert list(target.glob("keras_tlft_example-*.dist-info"))
    return target


def cli(installed, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get(
        "PYTHONPATH", "")]), "KERAS_TLFT_STRICT_PLUGINS": "1"}
    proc = subprocess.run([PY, "-m", "keras_tlft", *args], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_plugins_shows_the_installed_example_with_its_version(installed):
    doc = cli(installed, "plugins", "--json")
    example = next(p for p in doc["plugins"] if p["name"] == "example")
    assert example["distribution"] == "keras-tlft-example"
    assert example["version"] == "0.1.0"
    assert example["backbones"] == 1 and example["hooks"] == ["register_backbones"]
    assert doc["failures"] == []


def test_list_shows_the_example_backbone_next_to_the_others(installed):
    rows = cli(installed, "list", "--json")
    row = next(r for r in rows if r["key"] == "example:tiny_convnet")
    assert row["params"] == 19_344 and row["blocks"] == 3
    assert any(r["source"] == "applications" for r in rows)


def test_inspect_builds_the_example_and_unfreezes_its_top_block(installed):
    doc = cli(installed, "inspect", "example:tiny_convnet", "--unfreeze", "1", "--json")
    assert doc["total_params"] == 19_344
    assert [b["name"] for b in doc["blocks"]] == ["stem", "block1", "block2"]
    assert [b["trainable"] for b in doc["blocks"]] == [False, False, True]


def test_the_example_spec_conforms():
    sys.path.insert(0, str(EXAMPLE))
    try:
        import tlft_example
    finally:
        sys.path.remove(str(EXAMPLE))
    summary = check_backbone_spec(tlft_example.TINY_CONVNET)
    assert summary["params"] == 19_344


@pytest.mark.heavy  # the example's own pytest run, in a subprocess
def test_the_examples_own_tests_pass(installed):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    proc = subprocess.run(
        [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, env=env, cwd=EXAMPLE, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

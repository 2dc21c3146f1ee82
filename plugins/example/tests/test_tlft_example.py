"""The example plugin's own tests: what an outside plugin author would write."""

import pytest
import tlft_example

from keras_tlft.backbones.registry import Registry
from keras_tlft.backbones.testing import check_backbone_spec


@pytest.mark.parametrize("spec", tlft_example.SPECS, ids=lambda s: s.name)
def test_spec_conforms(spec):
    summary = check_backbone_spec(spec)
    assert [b.name for b in summary["blocks"]] == ["stem", "block1", "block2"]


def test_hook_registers_the_spec_without_failures():
    registry = Registry()
    registry.collect("example", tlft_example.register_backbones)
    assert registry.failures == []
    assert registry.resolve("example:tiny_convnet") is tlft_example.TINY_CONVNET
    assert registry.resolve("example_convnet") is tlft_example.TINY_CONVNET


def test_importing_the_plugin_imports_no_keras():
    import subprocess
    import sys

    code = "import sys, tlft_example; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

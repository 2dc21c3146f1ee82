"""``keras-tlft new-plugin NAME``: a plugin project whose tests pass out of the box.

The project is ``plugins/example`` generalised: one package with a tiny three-block backbone
registered by a ``register_backbones`` hook, the entry point in ``pyproject.toml``, and tests that
run the conformance kit, register the spec and check that importing the plugin imports no Keras.
Every file is written atomically (a temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from keras_tlft._files import atomic_write
from keras_tlft.backbones.hookspecs import PLUGIN_API_VERSION

__all__ = ["PLUGIN_NAME_PATTERN", "write_plugin_project"]

PLUGIN_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")

PYPROJECT = '''\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{dist}"
version = "0.1.0"
description = "A keras-tlft backbone plugin: {name}."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["keras-tlft"]

[project.optional-dependencies]
test = ["pytest>=8"]

# The hook module, made known to keras-tlft under the plugin name "{name}": this name is also
# the source of every backbone the plugin registers ("{name}:{name}_convnet").
[project.entry-points.keras_tlft]
{name} = "{package}"

[tool.hatch.build.targets.wheel]
packages = ["{package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

MODULE = '''\
"""The {name} keras-tlft plugin.

Importing this module imports no Keras: the spec is plain data, and the builder imports Keras
only when keras-tlft builds the backbone. Replace the example backbone with yours; keras-tlft's
docs/plugins.md describes every field of BackboneSpec.
"""

from __future__ import annotations

from keras_tlft import BackboneSpec, BlockRule, hookimpl

__version__ = "0.1.0"
KERAS_TLFT_PLUGIN_API = {api}


def build_convnet(input_shape=(32, 32, 3), weights=None, include_top=False):
    """A three-block convolutional backbone; ``weights`` is ``None`` or a weights file."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, filters in enumerate((32, 48), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"block{{i}}_conv")(x)
        x = layers.BatchNormalization(name=f"block{{i}}_bn")(x)
        x = layers.ReLU(name=f"block{{i}}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{{i}}_pool")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name="{name}_convnet")
    if weights is not None:
        model.load_weights(weights)
    return model


CONVNET = BackboneSpec(
    name="{name}_convnet",
    builder=build_convnet,
    family="convnet",
    description="A tiny three-block convnet (replace it with your backbone)",
    default_input_shape=(32, 32, 3),
    min_input_size=8,
    params=19_344,
    preprocessing="rescale",
    blocks=(
        BlockRule("stem", "^stem_"),
        BlockRule("block1", "^block1_"),
        BlockRule("block2", "^block2_"),
    ),
)

SPECS = (CONVNET,)


@hookimpl
def register_backbones(register):
    """Register every backbone of this plugin."""
    for spec in SPECS:
        register(spec)
'''

TESTS = '''\
"""The {name} plugin's tests: conformance, registration, and a fast ``keras-tlft list``."""

import pytest
import {package}

from keras_tlft.backbones.registry import Registry
from keras_tlft.backbones.testing import check_backbone_spec, check_plugin_module


@pytest.mark.parametrize("spec", {package}.SPECS, ids=lambda s: s.name)
def test_spec_conforms(spec):
    check_backbone_spec(spec)


def test_hook_registers_every_spec_without_failures():
    registry = Registry()
    registry.collect("{name}", {package}.register_backbones)
    assert registry.failures == []
    for spec in {package}.SPECS:
        assert registry.resolve(f"{name}:{{spec.name}}").name == spec.name


def test_importing_the_plugin_imports_no_keras():
    check_plugin_module("{package}")
'''

README = '''\
# {dist}

A keras-tlft backbone plugin, made by `keras-tlft new-plugin {name}`.

```bash
pip install -e .
keras-tlft plugins                    # lists "{name}"
keras-tlft check {name} --build       # the conformance kit over every backbone
keras-tlft inspect {name}:{name}_convnet --unfreeze 1
python -m pytest
```
'''


def _check_name_is_free(name: str) -> None:
    """Refuse a plugin name that keras-tlft would refuse to load: its own, or one that an
    installed distribution's entry point already holds (the first one loaded keeps a name)."""
    from keras_tlft.backbones.plugins import DEFAULT_PLUGIN, _dist_name, _entry_points

    if name == DEFAULT_PLUGIN:
        raise ValueError(
            f"The plugin name {name!r} is keras-tlft's own (its heads and schedule presets): "
            f"keras-tlft would refuse to load a plugin of that name. Pick another name. "
            f"Received: name={name!r}"
        )
    for ep in _entry_points():
        if ep.name == name:
            dist = _dist_name(ep) or "unknown"
            raise ValueError(
                f"The plugin name {name!r} is taken by the installed distribution {dist!r}: "
                f"keras-tlft loads the first plugin of a name and refuses the others. Pick "
                f"another name (run `keras-tlft plugins` for the names in use). "
                f"Received: name={name!r}"
            )


def write_plugin_project(name: str, directory: str | os.PathLike) -> list[Path]:
    """Write the plugin project ``name`` into ``directory`` (which must not exist).

    Returns the paths written. Raises ``ValueError``, before writing anything, for a name that
    is not a lowercase Python identifier, a name the host would refuse to load (keras-tlft's
    own, or one an installed plugin holds), or a directory that exists.
    """
    if not isinstance(name, str) or not PLUGIN_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "A plugin name must be lowercase letters, digits and '_', starting with a letter "
            f"(it names the entry point and the package). Received: name={name!r}"
        )
    _check_name_is_free(name)
    root = Path(directory)
    if root.exists():
        raise ValueError(
            f"{str(root)!r} exists; pick a new directory for the plugin project. "
            f"Received: directory={str(root)!r}"
        )
    dist = f"keras-tlft-{name.replace('_', '-')}"
    values = {"name": name, "package": f"tlft_{name}", "dist": dist, "api": PLUGIN_API_VERSION}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{values['package']}/__init__.py": MODULE,
        "tests/test_plugin.py": TESTS,
    }
    written = []
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(template.format(**values))
        written.append(path)
    return written

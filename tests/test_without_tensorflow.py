"""JAX users need no TensorFlow: the CLI, build_model, ProgressiveUnfreeze and fit_frozen run in a
process where `import tensorflow` fails (as when it is not installed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import sys


class NoTensorFlow:  # `import tensorflow` fails as when it is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}")


sys.meta_path.insert(0, NoTensorFlow())
import numpy as np
import keras_tlft as tlft
from keras_tlft.cli import main
assert main(["inspect", "vgg16", "--json"]) == 0
model = tlft.build_model("mobilenet_v2", 3, input_shape=(32, 32, 3), weights=None)
model.compile("adam", "sparse_categorical_crossentropy")
x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = np.arange(8) % 3
tlft.fit_frozen(model, x, y, epochs=1, batch_size=4, verbose=0)
history = model.fit(x, y, epochs=3, initial_epoch=1, batch_size=4, verbose=0,
                    callbacks=[tlft.ProgressiveUnfreeze({1: 2, 2: "all"})])
trainable = history.history["trainable_params"]
assert trainable[0] < trainable[1], trainable
print("OK", "tensorflow" in sys.modules)
"""


@pytest.mark.heavy
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_user_needs_no_tensorflow():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).parent.parent, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().splitlines()[-1] == "OK False"

"""The lr_find and FeatureDrift suites on the other Keras backends.

Keras fixes its backend when it is first imported, so these tests run again in a subprocess per
backend (this process runs them on its own backend, normally TensorFlow), as
tests/test_backends.py does for the ProgressiveUnfreeze suite.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

TESTS = Path(__file__).parent
RECIPE_TESTS = [str(TESTS / "test_lr_finder.py"), str(TESTS / "test_drift.py")]


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_lr_find_and_feature_drift_pass_on(backend):
    if keras.backend.backend() == backend:
        pytest.skip(f"this process already runs these tests on {backend}")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: pip install -e '.[backends]'")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *RECIPE_TESTS],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=1800, check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"{backend}: {summary}")
    assert proc.returncode == 0, f"on {backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"

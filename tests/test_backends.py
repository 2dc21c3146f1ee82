"""The ProgressiveUnfreeze suite on the other Keras backends.

Keras fixes its backend when it is first imported, so the callback's tests run again in a
subprocess per backend (this process runs them on its own backend, normally TensorFlow).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

# Reruns of the callback suite in subprocesses: the "heavy" tier (-m "not slow and not heavy"
# skips it).
pytestmark = pytest.mark.heavy

TESTS = Path(__file__).parent
# The callback's suite, and those of the recipes built around it.
CALLBACK_TESTS = sorted(str(p) for p in TESTS.glob("test_unfreeze*.py")) + [
    str(TESTS / name) for name in (
        "test_lr_finder.py",            # lr_find
        "test_drift.py",                # FeatureDrift
        "test_early_stopping.py",       # StageEarlyStopping
        "test_presets_literature.py",   # lp_ft, ulmfit, layer_decay, fine_tune
        "test_prefix_cache.py",         # fine_tune on cached frozen prefixes
        "test_vit_blocks.py",           # layer decay on keras-hub's ViTs
        "test_bn_policy.py",            # the BatchNorm policies
    )]


# JAX's rerun takes about 9 minutes at one go: in three parts (every third module), which
# pytest-xdist's workers (`-n 2`, as CI runs the tier) take in parallel.
PARTS = {"jax": 3, "torch": 1}


@pytest.mark.parametrize(("backend", "part"), [
    pytest.param(b, i, id=f"{b}-{i + 1}of{n}" if n > 1 else b)
    for b, n in PARTS.items() for i in range(n)])
def test_callback_suite_passes_on(backend, part):
    if keras.backend.backend() == backend:
        pytest.skip(f"this process already runs the suite on {backend}")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: pip install -e '.[backends]'")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *CALLBACK_TESTS[part::PARTS[backend]]],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=1800, check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"{backend}: {summary}")
    assert proc.returncode == 0, f"on {backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"

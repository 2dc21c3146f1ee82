"""ProgressiveUnfreeze under distribution: tf.distribute.MirroredStrategy (TensorFlow) and
keras.distribution.DataParallel (JAX), each on two logical CPU devices in its own process
(tests/helpers_unfreeze/distributed_run.py), compared with the same training on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

SCRIPT = Path(__file__).parent / "helpers_unfreeze" / "distributed_run.py"
BACKEND = keras.backend.backend()
pytestmark = pytest.mark.heavy  # a training process per strategy


def _run() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_stages_train_as_on_one_device(result: dict) -> None:
    assert result["replicas"] == 2 and len(result["devices"]) == 2
    assert result["unfreeze_stage"] == [0, 1, 2]
    assert result["moved"][0] == []
    assert result["moved"][1] == ["block3_conv/bias", "block3_conv/kernel"]
    assert len(result["moved"][2]) == 6 and not any("bn" in k for k in result["moved"][2])
    assert result["moved"] == result["single_moved"]
    assert result["max_weight_diff"] < 1e-5


@pytest.mark.skipif(BACKEND != "tensorflow",
                    reason="tf.distribute.MirroredStrategy needs the TensorFlow backend")
def test_mirrored_strategy_on_two_devices():
    _assert_stages_train_as_on_one_device(_run())


@pytest.mark.skipif(BACKEND != "jax",
                    reason="keras.distribution.DataParallel is tested on the JAX backend")
def test_jax_data_parallel_on_two_devices():
    _assert_stages_train_as_on_one_device(_run())

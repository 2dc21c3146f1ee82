"""ProgressiveUnfreeze beyond one process: JAX DataParallel across two processes on loopback,
ModelParallel with a LayoutMap on two CPU devices, and TensorFlow's MultiWorkerMirroredStrategy.

Each run is a child process (tests/helpers_distributed/), with its own backend and device flags,
bounded by a timeout; the processes talk over 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HELPERS = Path(__file__).parent / "helpers_distributed"
TIMEOUT_S = 240  # per group of processes; about 30 s on a quiet 2-core machine

requires_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                  reason="needs jax installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(commands: list[list[str]], env: dict) -> None:
    """Start every command at once, wait for all (killing all of them past the timeout)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    procs = [subprocess.Popen([sys.executable, *cmd], env=full_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd in commands]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for cmd, proc, out in zip(commands, procs, outputs):
        assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{out[-4000:]}"


def load(path: Path) -> tuple[list, dict]:
    with np.load(path) as z:
        weights = [z[f"w{i}"] for i in range(len([k for k in z.files if k.startswith("w")]))]
        return weights, json.loads(str(z["summary"]))


@pytest.mark.heavy
@requires_jax
def test_jax_data_parallel_two_processes_stage_together_and_match_one_process(tmp_path):
    script = str(HELPERS / "jax_multiprocess.py")
    port = str(free_port())
    run_processes(
        [[script, "--port", port, "--process-id", "0", "--out", str(tmp_path / "p0.npz")],
         [script, "--port", port, "--process-id", "1", "--out", str(tmp_path / "p1.npz")],
         [script, "--num-processes", "1", "--out", str(tmp_path / "single.npz")]],
        {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
    )
    (w0, s0), (w1, s1), (ws, single) = (load(tmp_path / f"{n}.npz")
                                        for n in ("p0", "p1", "single"))
    assert (s0["process_index"], s1["process_index"]) == (0, 1)
    assert s0["process_count"] == s1["process_count"] == 2 and len(s0["devices"]) == 2
    # Both processes change stage at the same epochs, with the same learning rates, as one does.
    for s in (s0, s1):
        assert s["history"]["unfreeze_stage"] == [0, 1, 2]
        assert s["history"]["backbone_lr"] == single["history"]["backbone_lr"]
        assert s["history"]["backbone_lr"][1] == pytest.approx(1e-2 * 0.5)
        assert s["iterations"] == single["iterations"] == 12
    # The same backbone weights move in each epoch: none, then the top block, then the rest
    # (BatchNorm's moving statistics stay frozen).
    assert s0["moved"] == s1["moved"] == single["moved"]
    assert s0["moved"][0] == [] and s0["moved"][1] == ["block3_conv/bias", "block3_conv/kernel"]
    assert len(s0["moved"][2]) == 6 and not any("moving" in k for k in s0["moved"][2])
    # Identical weights in both processes, and those of one process on the global batch.
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1))
    assert max(float(np.abs(a - b).max()) for a, b in zip(w0, ws)) < 1e-5
    assert s0["history"]["loss"] == pytest.approx(single["history"]["loss"], rel=1e-5)

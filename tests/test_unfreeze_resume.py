"""Resume: a run SIGKILLed mid-stage and restarted with BackupAndRestore ends exactly as an
uninterrupted run (trainable state, learning rates, weights, optimizer state), on the current
backend. Each run is a real process (tests/helpers_unfreeze/resume_run.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "helpers_unfreeze" / "resume_run.py"
pytestmark = pytest.mark.heavy  # chains of real training processes


def _start(out: Path, backup: Path, *flags: str) -> subprocess.Popen:
    env = {
        **os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
        # On JAX the runs compile the same stage functions: share them (half the time).
        "JAX_COMPILATION_CACHE_DIR": str(backup.parent / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), str(backup), *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(proc: subprocess.Popen, expect_killed: bool = False) -> None:
    output, _ = proc.communicate(timeout=300)
    if expect_killed:
        assert proc.returncode == -signal.SIGKILL, output[-3000:]
    else:
        assert proc.returncode == 0, output[-3000:]


def _chain(runs):
    """Run ``[(out, backup, flags, killed), ...]`` one after the other; returns a generator to
    step through, so that two chains can run side by side on two cores."""
    for out, backup, flags, killed in runs:
        proc = _start(out, backup, *flags)
        yield
        _finish(proc, killed)


def _run_side_by_side(*chains) -> None:
    chains = [iter(_chain(c)) for c in chains]
    while chains:
        chains = [c for c in chains if next(c, StopIteration) is not StopIteration]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Reference runs and interrupted ones, each chain in its own processes, two at a time."""
    tmp = tmp_path_factory.mktemp("resume")
    epoch_ref, plateau_ref = tmp / "epoch_ref.npz", tmp / "plateau_ref.npz"
    epoch_out, plateau_out = tmp / "epoch.npz", tmp / "plateau.npz"
    plateau = ("--schedule", "plateau", "--epochs", "5")
    epoch_runs = [
        # Stage 0 runs epochs 0-1, stage 1 epochs 2-3: killed before the change at epoch 2...
        (epoch_out, tmp / "b1", ("--kill", "1:1"), True),
        # ...then, resumed with the callbacks in the other order, killed after it, mid-stage...
        (epoch_out, tmp / "b1", ("--kill", "3:2", "--backup-first"), True),
        # ...and resumed to the end.
        (epoch_out, tmp / "b1", (), False),
    ]
    other_runs = [
        (epoch_ref, tmp / "b_ref1", (), False),
        # Plateau stages (one every 2 epochs here) are decided from val_loss: killed in stage 1.
        (plateau_out, tmp / "b2", (*plateau, "--kill", "3:1"), True),
        (plateau_out, tmp / "b2", plateau, False),
        (plateau_ref, tmp / "b_ref2", plateau, False),
    ]
    _run_side_by_side(epoch_runs, other_runs)
    return {name: np.load(path) for name, path in [
        ("epoch_ref", epoch_ref), ("epoch", epoch_out),
        ("plateau_ref", plateau_ref), ("plateau", plateau_out)]}


def _assert_same_end(ref, got) -> None:
    np.testing.assert_array_equal(got["trainable"], ref["trainable"])
    ref_logs, got_logs = json.loads(str(ref["logs"])), json.loads(str(got["logs"]))
    for key in ("epoch", "unfreeze_stage", "unfrozen_blocks", "trainable_params", "head_lr",
                "backbone_lr", "backbone_lr_min"):
        assert got_logs[key] == ref_logs[key], key
    weights = sorted(k for k in ref.files if k.startswith(("weight_", "optimizer_")))
    assert weights == sorted(k for k in got.files if k.startswith(("weight_", "optimizer_")))
    for key in weights:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_killed_before_and_after_a_stage_change_ends_as_an_uninterrupted_run(runs):
    ref = runs["epoch_ref"]
    assert json.loads(str(ref["logs"]))["unfreeze_stage"] == 2
    _assert_same_end(ref, runs["epoch"])


def test_killed_in_a_plateau_stage_ends_as_an_uninterrupted_run(runs):
    ref = runs["plateau_ref"]
    assert json.loads(str(ref["logs"]))["unfreeze_stage"] == 2  # stages began at epochs 0, 2, 4
    _assert_same_end(ref, runs["plateau"])


@pytest.fixture(scope="module")
def mid_epoch_runs(tmp_path_factory):
    """BackupAndRestore(save_freq=1): killed after batch 2 of epoch 0, or of epoch 1, each then
    resumed from that mid-epoch backup; and the same run uninterrupted."""
    tmp = tmp_path_factory.mktemp("mid_epoch")
    freq = ("--save-freq", "1")
    outs = {name: tmp / f"{name}.npz" for name in ("ref", "epoch0", "epoch1")}
    epoch0 = [(outs["epoch0"], tmp / "b0", (*freq, "--kill", "0:2"), True),
              (outs["epoch0"], tmp / "b0", freq, False)]
    others = [(outs["epoch1"], tmp / "b1", (*freq, "--kill", "1:2"), True),
              (outs["epoch1"], tmp / "b1", freq, False),
              (outs["ref"], tmp / "bref", freq, False)]
    _run_side_by_side(epoch0, others)
    return {name: np.load(path) for name, path in outs.items()}


@pytest.mark.parametrize("killed_in", ["epoch0", "epoch1"])
def test_mid_epoch_backup_keeps_each_stages_warmup(mid_epoch_runs, killed_in):
    """Keras redoes the killed epoch's batches on top of the mid-epoch weights (3 steps here,
    counted by the optimizer); everything else is the uninterrupted run's: stage 0's warm-up
    goes on from iteration 0 (killed in epoch 0 it used to start over at the restored
    iteration), each later stage begins at its epoch, and the end is in the same stage at the
    same learning rates."""
    ref, got = mid_epoch_runs["ref"], mid_epoch_runs[killed_in]
    replayed = int(got["iterations"]) - int(ref["iterations"])
    assert replayed == 3  # batches 0-2 of the killed epoch, done twice
    begun = ref["stage_iterations"] >= 0
    np.testing.assert_array_equal(ref["stage_iterations"][begun], [0, 8, 16])
    np.testing.assert_array_equal(got["stage_iterations"][begun], [0, 8 + replayed, 16 + replayed])
    np.testing.assert_array_equal(got["stage_iterations"][~begun], -1)
    np.testing.assert_array_equal(got["trainable"], ref["trainable"])
    ref_logs, got_logs = json.loads(str(ref["logs"])), json.loads(str(got["logs"]))
    for key in ("epoch", "unfreeze_stage", "unfrozen_blocks", "trainable_params", "head_lr",
                "backbone_lr", "backbone_lr_min"):
        assert got_logs[key] == ref_logs[key], key

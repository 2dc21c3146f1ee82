"""The command line checks its arguments before the slow part, with the Python API's checks
and messages (issue #15): bad numbers, values that start with '-', empty phase lists, and no
TensorFlow start-up lines on stderr when a local file is inspected."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from keras_tlft.cli import main

PY = sys.executable

HEAVY = "sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)"


def run_main_in_subprocess(*args):
    """``main(args)`` in a fresh process: its exit status, stderr, and the heavy modules it
    imported."""
    code = (f"import sys; from keras_tlft.cli import main; rc = main({list(args)!r}); "
            f"print('HEAVY', {HEAVY}); sys.exit(rc)")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=300)
    return proc


@pytest.mark.parametrize("value, received", [
    ("-1", "-1.0"), ("nan", "nan"), ("inf", "inf"), ("0", "0.0"), ("fast", "'fast'"),
])
def test_bad_learning_rate_is_refused_with_the_api_message(value, received, capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "vgg16", "--schedule", "gradual", "--learning-rate", value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --learning-rate: Invalid --learning-rate: expected a finite number > 0" in err
    assert f"Received: --learning-rate={received}" in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Received" in errors[0]  # one line, after argparse's usage


def test_bad_learning_rate_fails_before_keras_is_imported():
    proc = run_main_in_subprocess("inspect", "vgg16", "--schedule", "gradual",
                                  "--learning-rate", "nan")
    assert proc.returncode == 2
    assert "Received: --learning-rate=nan" in proc.stderr


def test_bad_preset_number_on_the_command_line_exits_2_before_keras():
    proc = run_main_in_subprocess("inspect", "vgg16", "--schedule", "gradual:every=0")
    assert proc.returncode == 2, proc.stderr
    assert "Received: every=0" in proc.stderr
    assert "HEAVY []" in proc.stdout


def test_input_shape_starting_with_a_minus_gets_the_shape_message(capsys):
    assert main(["inspect", "vgg16", "--input-shape", "-1,224,3"]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err
    assert "--input-shape" in err and "-1,224,3" in err


def test_an_option_after_a_value_taking_option_is_still_an_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "vgg16", "--input-shape", "--json"])
    assert info.value.code == 2
    assert "expected one argument" in capsys.readouterr().err


@pytest.mark.parametrize("phases, message", [
    (",", "No phase to measure: expected a comma-separated list"),
    ("frozen,warm", "Unknown phase(s) warm: expected some of"),
])
def test_bench_with_bad_phases_fails_before_importing_keras(phases, message):
    proc = run_main_in_subprocess("bench", "mobilenet_v2", "--phases", phases)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and f"Received: --phases={phases!r}" in proc.stderr
    assert "HEAVY []" in proc.stdout


def test_inspect_of_a_local_file_keeps_tensorflow_start_up_lines_off_stderr(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="block1_conv")(inputs)
    path = tmp_path / "tiny.keras"
    keras.Model(inputs, x).save(path)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["KERAS_BACKEND"] = "tensorflow"
    proc = subprocess.run([PY, "-m", "keras_tlft", "inspect", str(path), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert '"layers"' in proc.stdout


def test_inspect_of_a_missing_local_file_fails_before_importing_keras(tmp_path):
    proc = run_main_in_subprocess("inspect", str(tmp_path / "nope.keras"))
    assert proc.returncode == 2
    assert "No Keras model file" in proc.stderr
    assert "HEAVY []" in proc.stdout

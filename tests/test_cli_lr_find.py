"""``keras-tlft lr-find``: the range test from the command line (VGG16 at 32x32, few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_tlft.cli import main


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 256, (16, 32, 32, 3)).astype("uint8"),
             y=rng.integers(0, 3, 16))
    return path


def test_lr_find_json_on_user_data_per_stage_with_a_plot(npz, tmp_path, capsys):
    png = tmp_path / "lr.png"
    rc = main(["lr-find", "vgg16", "--data", str(npz), "--steps", "6", "--batch-size", "4",
               "--schedule", "two_phase:frozen_epochs=1", "--plot", str(png), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    doc = json.loads(captured.out)  # exactly one JSON document on stdout
    assert doc["backbone"] == "applications:vgg16" and doc["input_shape"] == [32, 32, 3]
    assert [t["name"] for t in doc["tests"]] == ["head", "stage 1"]
    # Three classes read from y: the GAP head on VGG16's 512 channels trains 512 * 3 + 3.
    assert doc["tests"][0]["trainable_params"] == 512 * 3 + 3
    assert doc["tests"][1]["blocks"] == ["block1", "block2", "block3", "block4", "block5"]
    assert set(doc["suggestions"]) == {"head", "stage 1"}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_lr_find_prints_a_table_of_suggestions(capsys):
    assert main(["lr-find", "vgg16", "--input-shape", "32,32,3", "--steps", "4",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    for words in ("learning-rate range test", "steepest", "minimum/10", "head", "synthetic"):
        assert words in out


@pytest.mark.parametrize("args, words", [
    (["--start-lr", "1", "--end-lr", "0.1"], "--start-lr must be > 0 and below --end-lr"),
    (["--data", "/nonexistent.npz"], "--data file '/nonexistent.npz' does not exist"),
    (["--schedule", "slowly"], "Unknown schedule 'slowly'"),
    (["--head", "gap,bogus"], "bogus"),
])
def test_lr_find_bad_input_exits_2_with_one_line(args, words, capsys):
    assert main(["lr-find", "vgg16", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "Traceback" not in err


def test_lr_find_npz_without_labels_exits_2(tmp_path, capsys):
    path = tmp_path / "x_only.npz"
    np.savez(path, x=np.zeros((4, 32, 32, 3)))
    assert main(["lr-find", "vgg16", "--data", str(path)]) == 2
    assert "with arrays 'x' and 'y'. Received: arrays ['x']" in capsys.readouterr().err


def test_lr_find_on_too_few_samples_warns_in_one_line_but_not_on_synthetic_data(npz, capsys):
    assert main(["lr-find", "vgg16", "--data", str(npz), "--steps", "20", "--batch-size", "4",
                 "--json"]) == 0
    err = capsys.readouterr().err
    assert ("warning: lr_find: 20 steps of 4 pass over the 16 samples 5 times, so the loss "
            "keeps falling as the model memorises them") in " ".join(err.split())
    assert "UserWarning" not in err  # ours, not Python's with a source line
    assert main(["lr-find", "vgg16", "--input-shape", "32,32,3", "--steps", "40",
                 "--batch-size", "2", "--json"]) == 0
    assert "pass over" not in capsys.readouterr().err  # synthetic data: 5 passes, no news

"""Bad input at the edges (issue 23, items 8-12, 14, 15): one line naming the value and the fix,
exit 2, nothing half-written, and refused before anything expensive is built.

CLI checks that precede Keras run in a subprocess and assert that no heavy module was imported;
the few that need Keras (the optimizer's name, Keras's own refusal of a shape) run in-process
with ``build_model`` replaced by a function that fails the test if the model is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers_unfreeze import tiny

import keras_tlft as tlft
from keras_tlft import heads
from keras_tlft.cli import main

HEAVY = "sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)"


def cli(*args, env=None, timeout=120):
    """``keras-tlft ARGS`` in a fresh process: (exit status, stderr, heavy modules imported)."""
    code = (f"import sys; from keras_tlft.cli import main; rc = main({list(args)!r}); "
            f"print('HEAVY', {HEAVY}, file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    err, _, heavy = proc.stderr.rpartition("HEAVY ")
    return proc.returncode, " ".join(err.split()), heavy.strip()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_build(monkeypatch):
    """Fail the test if the CLI goes on to build a model."""
    def build(*args, **kwargs):
        raise AssertionError("the model was built before the bad input was refused")

    monkeypatch.setattr(tlft, "build_model", build)


# --- 8, 12: lr-find --data, --plot, --weights, --optimizer -----------------------------------


def _npz(path, x=None, y=None):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (8, 32, 32, 3)).astype("uint8") if x is None else x
    np.savez(path, x=x, y=np.arange(8) % 3 if y is None else y)
    return str(path)


def _nan_pixels():
    x = np.zeros((8, 32, 32, 3), "float32")
    x[0, 0, 0, 0] = np.nan
    return x


@pytest.fixture
def data_files(tmp_path):
    good = _npz(tmp_path / "good.npz")
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip archive " * 8)
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "garbage.h5").write_bytes(b"junk" * 16)
    os.mkfifo(tmp_path / "fifo.npz")
    return {
        "good": good,
        "labels7": _npz(tmp_path / "labels7.npz", y=np.arange(8)),
        "negative": _npz(tmp_path / "negative.npz", y=-np.ones(8, int)),
        "nan": _npz(tmp_path / "nan.npz", x=_nan_pixels()),
        "float_labels": _npz(tmp_path / "float.npz", y=np.linspace(0, 1, 8)),
        **{name: str(tmp_path / f"{name}.npz")
           for name in ("empty", "garbage", "truncated", "folder", "fifo")},
        "garbage_h5": str(tmp_path / "garbage.h5"),
        "missing_folder_png": str(tmp_path / "no_such_folder" / "lr.png"),
    }


LR_FIND_CASES = [
    (["--data", "{labels7}", "--num-classes", "3"],
     "a label 7 is outside the 3 classes of --num-classes (labels 0 to 2): raise --num-classes "
     "to 8 or drop it"),
    (["--data", "{negative}"], "the labels y must be class indices >= 0. Received: a label -1"),
    (["--data", "{nan}"], "the pixels of x are not finite (NaN or inf)"),
    (["--data", "{float_labels}"], "the labels y must be integer class indices"),
    (["--data", "{empty}"], "'{empty}' cannot be read: it is empty"),
    (["--data", "{garbage}"], "'{garbage}' cannot be read"),
    (["--data", "{truncated}"], "'{truncated}' cannot be read: it is truncated or not an .npz"),
    (["--data", "{folder}"], "--data file '{folder}' is a directory"),
    (["--data", "{fifo}"], "--data file '{fifo}' is not a regular file (it is a FIFO)"),
    (["--data", "{good}", "--input-shape", "64,64,3"],
     "--input-shape 64x64x3 does not match the images in '{good}', which are 32x32x3"),
    (["--plot", "{missing_folder_png}"], "--plot cannot write '{missing_folder_png}': the folder"),
    (["--weights", "{garbage_h5}"], "Weights file '{garbage_h5}' is not an HDF5 file"),
]


@pytest.mark.parametrize("args, words", LR_FIND_CASES, ids=lambda a: str(a)[:40])
def test_lr_find_refuses_bad_data_and_paths_before_keras(args, words, data_files):
    args = [a.format(**data_files) for a in args]
    rc, err, heavy = cli("lr-find", "vgg16", *args)
    assert rc == 2, err
    assert words.format(**data_files) in err
    assert "allow_pickle" not in err  # never suggest running the code a file holds
    assert heavy == "[]"  # refused before Keras is even imported, let alone the model built


def test_lr_find_unknown_optimizer_is_refused_before_the_model_is_built(no_build, capsys):
    assert main(["lr-find", "vgg16", "--optimizer", "nosuch", "--steps", "2"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "Unknown --optimizer 'nosuch': expected a Keras optimizer name" in line


# --- 9: sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["inspect", "vgg16", "--input-shape", "99999999999,224,3"],
     "Invalid --input-shape: expected at most 16,384 pixels a side"),
    (["inspect", "vgg16", "--head", "gap", "--num-classes", "99999999999"],
     "Invalid num_classes: expected at most 1,000,000 units"),
    (["lr-find", "vgg16", "--num-classes", "99999999999"],
     "Invalid num_classes: expected at most 1,000,000 units"),
    (["lr-find", "vgg16", "--batch-size", "99999999999"],
     "of memory available: lower --batch-size. Received: --batch-size=99999999999"),
    (["lr-find", "vgg16", "--steps", "99999999999"], "--steps must be at most 100,000"),
    (["bench", "vgg16", "--steps", "99999999999"], "--steps must be at most 100,000"),
    (["bench", "vgg16", "--batch-size", "99999999999"],
     "of memory available: lower --batch-size. Received: --batch-size=99999999999"),
    (["bench", "vgg16", "--image-size", "99999"], "--image-size must be at most 16,384 pixels"),
])
def test_sizes_that_cannot_fit_are_refused_before_anything_is_built(args, words):
    rc, err, heavy = cli(*args)
    assert rc == 2 and words in err, err
    assert heavy == "[]"


# --- 10: a backbone's minimum size ------------------------------------------------------------


def test_inspect_below_the_backbones_minimum_names_the_minimum():
    rc, err, heavy = cli("inspect", "vgg16", "--input-shape", "8,8,3")
    assert rc == 2, err
    assert "applications:vgg16 needs at least 32x32 pixels" in err
    assert "Received: --input-shape=8,8,3" in err and heavy == "[]"


def test_a_shape_keras_refuses_is_bad_input_not_an_internal_error(monkeypatch, capsys):
    from keras_tlft import registry

    reg = registry.get_registry()
    key = next(k for k, s in reg.specs.items() if s.key == "applications:vgg16")
    # The spec does not know the minimum: Keras's own ValueError is reported as bad input.
    monkeypatch.setitem(reg.specs, key, dataclasses.replace(reg.specs[key], min_input_size=1))
    assert main(["inspect", "vgg16", "--input-shape", "8,8,3"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "applications:vgg16 cannot be built at input shape 8x8x3" in line
    assert "Received: --input-shape=8,8,3" in line


# --- 11: options that do nothing, conflicts, names -------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["inspect", "vgg16", "--num-classes", "3"], "--num-classes does nothing without --head"),
    (["inspect", "vgg16", "--epochs", "3"], "--epochs does nothing without --schedule"),
    (["inspect", "vgg16", "--learning-rate", "0.1"],
     "--learning-rate does nothing without --schedule"),
    (["inspect", "vgg16", "--bn", "affine"], "--bn does nothing without --unfreeze"),
    (["inspect", "vgg16", "--schedule", "gradual", "--bn", "train"],
     "--bn does nothing without --unfreeze"),
    (["inspect", "vgg16", "--unfreeze", "1", "--bn", "affine", "--train-bn"],
     "--train-bn (the old spelling of --bn train) contradicts --bn affine"),
    (["bench", "vgg16", "--phases", "frozen,frozen"], "--phases names frozen twice"),
    (["list", "--source", ""], "--source is empty"),
])
def test_options_that_would_do_nothing_are_refused(args, words):
    rc, err, heavy = cli(*args)
    assert rc == 2 and words in err, err
    assert heavy == "[]"


def test_a_listing_that_matches_nothing_says_so_and_why():
    rc, err, _ = cli("list", "[/x]", "--json")
    assert rc == 0
    assert "No backbone matches '[/x]': the pattern must match a whole name" in err


@pytest.mark.parametrize("value, words", [
    ("nosuch", "no installed plugin is named 'nosuch'; the installed ones are applications"),
    ("Applications", "names are matched exactly: did you mean 'applications'?"),
    ("keras_tlft", "keras-tlft's own heads and schedule presets cannot be disabled"),
])
def test_disabling_a_plugin_that_is_not_there_says_so(value, words):
    # `list` warns on stderr; `plugins` reports failures in its own output (its JSON).
    env = {**os.environ, "KERAS_TLFT_DISABLE_PLUGINS": value}
    rc, err, _ = cli("list", "vgg16", "--json", env=env)
    assert rc == 0 and words in err, err
    proc = subprocess.run([sys.executable, "-m", "keras_tlft", "plugins", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    failures = [f["reason"] for f in json.loads(proc.stdout)["failures"]]
    assert proc.returncode == 0 and any(words in " ".join(r.split()) for r in failures), failures


def test_disabled_plugins_lists_only_plugins_that_were_disabled(monkeypatch):
    from keras_tlft.plugins import make_plugin_manager
    from keras_tlft.registry import Registry

    monkeypatch.setenv("KERAS_TLFT_DISABLE_PLUGINS", "nosuch,keras_hub")
    loaded = make_plugin_manager()
    with pytest.warns(UserWarning, match="'nosuch'"):
        registry = Registry.from_plugin_manager(loaded.pm, loaded.failures, loaded.dists)
    assert registry.disabled == ["keras_hub"]
    assert "applications" in {p.name for p in registry.plugins}


@pytest.mark.parametrize("name, words", [
    ("applications", "The plugin name 'applications' is taken by the installed distribution"),
    ("keras_tlft", "The plugin name 'keras_tlft' is keras-tlft's own"),
])
def test_new_plugin_refuses_a_name_the_host_would_refuse_and_writes_nothing(name, words,
                                                                            tmp_path):
    target = tmp_path / "project"
    rc, err, _ = cli("new-plugin", name, "--directory", str(target))
    assert rc == 2 and words in err, err
    assert not target.exists()


# --- 12: a directory or FIFO as a schedule ----------------------------------------------------


@pytest.mark.parametrize("kind, words", [("directory", "is a directory"),
                                         ("fifo", "is not a regular file (it is a FIFO)")])
def test_a_schedule_that_is_not_a_regular_file_is_named_for_what_it_is(kind, words, tmp_path):
    path = tmp_path / "schedule.json"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    rc, err, heavy = cli("inspect", "vgg16", "--schedule", str(path), timeout=60)
    assert rc == 2, err
    assert f"Schedule file '{path}' {words}" in err and heavy == "[]"
    with pytest.raises(ValueError, match="is a directory" if kind == "directory" else "FIFO"):
        tlft.parse_schedule(str(path))


def test_a_fifo_named_without_json_is_not_taken_for_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo("plan")
    with pytest.raises(ValueError, match="Schedule file 'plan' is not a regular file"):
        tlft.parse_schedule("plan")


def test_a_directory_given_as_a_model_file_is_named_for_what_it_is(tmp_path):
    folder = tmp_path / "backbone.keras"
    folder.mkdir()
    rc, err, heavy = cli("inspect", str(folder))
    assert rc == 2 and f"Model file '{folder}' is a directory" in err, err
    assert heavy == "[]"


# --- 14: head factories -----------------------------------------------------------------------


@pytest.mark.parametrize("call, words", [
    (lambda: heads.gap(0), "Invalid num_classes: expected an integer >= 1. Received: "
                           "num_classes=0"),
    (lambda: heads.gap(10, dropout=2), "Invalid dropout: expected a rate in [0, 1). "
                                       "Received: dropout=2"),
    (lambda: heads.gap(10, activation="nosuch"), "Invalid activation: expected None or one of"),
    (lambda: heads.mlp(10, units=(-1,)), "Invalid units: expected positive integer widths"),
    (lambda: heads.mlp_bn(10, units=256), "Invalid units: expected a sequence of hidden widths"),
    (lambda: heads.vgg(10, units=0), "Invalid units: expected an integer >= 1. Received: "
                                     "units=0"),
    (lambda: heads.gap(10**12), "Invalid num_classes: expected at most 1,000,000 units"),
])
def test_head_factories_refuse_nonsense_where_the_argument_is_given(call, words):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert words in str(info.value)


def test_a_head_spec_with_a_dense_layer_too_wide_is_refused():
    with pytest.raises(ValueError, match="the number of units must be at most 1,000,000"):
        heads.parse_head_spec("gap,dense:99999999999")


# --- 15: build_model, fit_frozen, lr_find -----------------------------------------------------


def _tiny_spec():
    def build(input_shape, weights=None, include_top=False):
        inputs = keras.Input(input_shape)
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
        if weights is not None:
            model.load_weights(weights)
        return model

    return tlft.BackboneSpec(name="tiny", builder=build, preprocessing="none", min_input_size=8)


def test_build_model_names_a_weights_file_it_cannot_load(tmp_path):
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"junk" * 16)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    unrelated = tmp_path / "unrelated.weights.h5"
    other.save_weights(unrelated)
    for path, words in ((garbage, "is not an HDF5 file"), (tmp_path / "missing.weights.h5",
                                                           "does not exist"),
                        (unrelated, "tiny could not load the weights file")):
        with pytest.raises(ValueError) as info:
            tlft.build_model(_tiny_spec(), 2, input_shape=(8, 8, 3), weights=str(path))
        assert repr(str(path)) in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"augmentation": [1, 2]}, "augmentation must be None, 'default' or a list of Keras layers"),
    ({"name": 123}, "name must be a string (the model's name) or None. Received: name=123"),
])
def test_build_model_refuses_bad_augmentation_and_name(kwargs, words):
    with pytest.raises(TypeError) as info:
        tlft.build_model(_tiny_spec(), 2, input_shape=(8, 8, 3), weights=None, **kwargs)
    assert words in str(info.value)


def _compiled_tiny():
    model = tlft.build_model(_tiny_spec(), 2, input_shape=(8, 8, 3), weights=None)
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("x, y, words", [
    (np.zeros((6, 8, 8, 3)), np.zeros(5), "x and y must hold the same number of samples: 6 in x, "
                                          "5 in y"),
    (np.zeros((6, 9, 9, 3)), np.zeros(6), "The samples of x have the shape (9, 9, 3), but the "
                                          "model takes (8, 8, 3)"),
])
def test_fit_frozen_and_lr_find_check_the_arrays_before_keras(x, y, words):
    model = _compiled_tiny()
    with pytest.raises(ValueError) as info:
        tlft.fit_frozen(model, x, y, epochs=1, verbose=0)
    assert words in str(info.value)
    with pytest.raises(ValueError) as info:
        tlft.lr_find(model, x, y, steps=2, batch_size=2)
    assert words in str(info.value)


def test_lr_find_on_a_model_whose_input_is_not_an_image_checks_lengths_too():
    model = tiny.nested_model()
    model.compile("adam", "mse")
    x = np.zeros((4, *model.input_shape[1:]))
    with pytest.raises(ValueError, match="4 in x, 3 in y"):
        tlft.lr_find(model, x, np.zeros((3, 2)), steps=2, batch_size=2)

"""A model that leaves its process: saved as .keras mid fine-tuning, loaded in a fresh process
(with plain Keras, keras-tlft not importable), and fine-tuning resumed from the file with its
optimizer state. Also: a stage that trains nothing new is refused before training. Runs on every
backend (tests/test_backends.py); each load is a real process (helpers_unfreeze/reload_run.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import SHAPE, data, nested_model  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import ProgressiveUnfreeze  # noqa: E402

SCRIPT = Path(__file__).parent / "helpers_unfreeze" / "reload_run.py"
SCHEDULE = {0: "none", 1: 1, 3: "all"}


def _run(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _spec(preprocessing):
    """A registered-like spec of a small conv backbone with the given preprocessing."""

    def builder(input_shape, weights, include_top):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
        x = keras.layers.BatchNormalization(name="block1_bn")(x)
        x = keras.layers.Conv2D(4, 3, name="block2_conv")(x)
        return keras.Model(inputs, x, name="small")

    return tlft.BackboneSpec(name=f"small_{preprocessing}", builder=builder, source="tests",
                             default_input_shape=SHAPE, min_input_size=8,
                             preprocessing=preprocessing,
                             blocks=(tlft.BlockRule("b1", "^block1_"),
                                     tlft.BlockRule("b2", "^block2_")))


def test_saved_mid_schedule_model_predicts_the_same_with_plain_keras_in_a_fresh_process(
        tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (8, *SHAPE)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    args, expected = [], {}
    # A channel flip; a scale and offset per channel. Each BatchNorm policy saves plain Keras.
    for preprocessing, bn in (("caffe", "frozen"), ("torch", "affine")):
        keras.utils.set_random_seed(0)
        model = tlft.build_model(_spec(preprocessing), 3, head="gap,dense:3", weights=None,
                                 bn=bn)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(x, np.arange(8) % 3, epochs=2, verbose=0,
                  callbacks=[ProgressiveUnfreeze({0: "none", 1: 1}, bn=bn)])
        model.save(tmp_path / f"{preprocessing}.keras")
        args += [tmp_path / f"{preprocessing}.keras", tmp_path / f"{preprocessing}.npy"]
        expected[preprocessing] = model.predict(x, verbose=0)
    _run("predict", tmp_path / "x.npy", *args)
    for preprocessing, predictions in expected.items():
        np.testing.assert_array_equal(np.load(tmp_path / f"{preprocessing}.npy"), predictions)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Fine-tuning of the tiny model for 4 epochs, saved as .keras after epoch 2; then resumed
    from the file in fresh processes, with resume_from and without."""
    tmp = tmp_path_factory.mktemp("reload")
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    callback = ProgressiveUnfreeze(SCHEDULE)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False, callbacks=[callback])
    path = tmp / "m.keras"
    model.save(path)
    history = model.fit(x, y, batch_size=8, epochs=4, initial_epoch=2, verbose=0, shuffle=False,
                        callbacks=[callback])
    resumed, fresh = tmp / "resumed.npz", tmp / "fresh.npz"
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "resume", str(path), str(out), *flag],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
             for out, flag in ((resumed, ()), (fresh, ("--no-resume-from",)))]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    return {"path": path, "model": model, "history": history.history,
            "resumed": np.load(resumed), "fresh": np.load(fresh)}


def test_fine_tuning_resumed_from_a_keras_file_keeps_the_optimizer_state(reference):
    model, resumed = reference["model"], reference["resumed"]
    assert list(resumed["trainable_params"]) == reference["history"]["trainable_params"]
    optimizer = np.concatenate([np.ravel(keras.ops.convert_to_numpy(v))
                                for v in model.optimizer.variables])
    np.testing.assert_allclose(resumed["optimizer"], optimizer, rtol=1e-5, atol=1e-6)
    weights = np.concatenate([np.ravel(w) for w in model.get_weights()])
    np.testing.assert_allclose(resumed["weights"], weights, rtol=1e-5, atol=1e-6)


def test_resuming_from_a_keras_file_without_resume_from_says_why_the_state_is_lost(reference):
    fresh = reference["fresh"]
    # The blocks are the same, so is what each stage trains; the optimizer starts afresh.
    assert list(fresh["trainable_params"]) == reference["history"]["trainable_params"]
    said = " ".join(fresh["warnings"])
    assert "Keras skipped the optimizer state saved in it" in said
    assert "'Skipping variable loading for optimizer'" in said  # names Keras's own warning
    # ... and says which path to take instead (issue 23, item 21).
    assert "keras.saving.load_model('PATH.keras', compile=False), compile it as for the first " \
           "run and pass resume_from='PATH.keras'; to predict only, load it with " \
           "compile=False" in said
    weights = np.concatenate([np.ravel(w) for w in reference["model"].get_weights()])
    assert not np.allclose(fresh["weights"], weights, rtol=1e-5, atol=1e-6)


def test_the_documented_reload_paths_emit_no_warning(reference, caplog):
    """To predict: load_model(compile=False). To resume: the same, compile as for the first run,
    resume_from. Neither asks Keras to place the optimizer state saved for every weight the
    schedule can unfreeze, so neither prints 'Skipping variable loading for optimizer'."""
    path, x = reference["path"], data(16)[0]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        served = keras.saving.load_model(path, compile=False)
        predictions = served.predict(x, verbose=0)
        model = keras.saving.load_model(path, compile=False)
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        history = model.fit(*data(16), batch_size=8, epochs=4, initial_epoch=2, verbose=0,
                            shuffle=False,
                            callbacks=[ProgressiveUnfreeze(SCHEDULE, resume_from=path)])
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "Skipping variable loading" in m], said
    # No warning of ours or Keras's either (a library's DeprecationWarning is not the point).
    assert not [w for w in caught if not issubclass(w.category, DeprecationWarning)], said
    assert predictions.shape == (16, 2)
    # The resumed run ends as the uninterrupted one: the optimizer state was restored.
    assert history.history["trainable_params"] == reference["history"]["trainable_params"]
    weights = np.concatenate([np.ravel(w) for w in reference["model"].get_weights()])
    resumed = np.concatenate([np.ravel(w) for w in model.get_weights()])
    np.testing.assert_allclose(resumed, weights, rtol=1e-5, atol=1e-6)


def test_plain_load_model_of_a_fine_tuning_file_is_what_warns(reference):
    # A Keras canary: the warning the documented paths avoid (when this fails, Keras changed
    # and the docs' advice to load with compile=False may be moot).
    with pytest.warns(UserWarning, match="Skipping variable loading for optimizer"):
        keras.saving.load_model(reference["path"])


def test_resume_from_a_file_of_another_schedule_is_refused(reference):
    path = reference["path"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.saving.load_model(path)
    x, y = data(16)
    callback = ProgressiveUnfreeze({0: "none", 1: 2}, resume_from=path)  # fewer variables
    before = model.get_weights()
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    message = str(info.value)
    assert f"Cannot resume from {str(path)!r}: its optimizer state (23 variables) is not " \
           "laid out as this model's optimizer" in message
    assert "nothing was loaded" in message and f"Received: resume_from={str(path)!r}" in message
    _assert_unchanged(before, model.get_weights())


def _assert_unchanged(before, after) -> None:
    assert len(before) == len(after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def _fresh_staged_model():
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_resume_from_an_unrelated_keras_file_names_it_and_leaves_the_model_as_it_was(tmp_path):
    # Another model with the same backbone and another head: Keras's load_weights would
    # overwrite the backbone, then fail at the head.
    other = nested_model(seed=1, n_out=3)
    other.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y3 = data(8, n_out=3)
    other.fit(x, y3, epochs=1, verbose=0)
    other.save(tmp_path / "other.keras")
    model = _fresh_staged_model()
    callback = ProgressiveUnfreeze(SCHEDULE, resume_from=tmp_path / "other.keras")
    before = [np.array(w) for w in model.get_weights()]
    x, y = data(8)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    message = str(info.value)
    path = str(tmp_path / "other.keras")
    assert f"Cannot resume from {path!r}: its optimizer state" in message
    assert "Expected the .keras file this model was saved to" in message
    assert f"Received: resume_from={path!r}" in message
    _assert_unchanged(before, model.get_weights())


@pytest.mark.parametrize("content, problem", [
    (None, "the file does not exist"),
    (b"not a zip archive at all", "it is not a readable .keras file (BadZipFile: "),
    ("truncated", "it is not a readable .keras file ("),
])
def test_resume_from_a_missing_or_broken_file_is_one_clear_error(tmp_path, reference, content,
                                                                  problem):
    path = tmp_path / "m.keras"
    if content == "truncated":
        data_bytes = reference["path"].read_bytes()
        path.write_bytes(data_bytes[: len(data_bytes) // 2])
    elif content is not None:
        path.write_bytes(content)
    model = _fresh_staged_model()
    before = [np.array(w) for w in model.get_weights()]
    x, y = data(8)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[ProgressiveUnfreeze(SCHEDULE, resume_from=path)])
    message = str(info.value)
    assert message.startswith(f"Cannot resume from {str(path)!r}: {problem}")
    assert "\n" not in message and f"Received: resume_from={str(path)!r}" in message
    _assert_unchanged(before, model.get_weights())


def test_resume_from_must_be_a_keras_file():
    with pytest.raises(ValueError, match=r"resume_from must be .*Received: resume_from='m.h5'"):
        ProgressiveUnfreeze({0: "none"}, resume_from="m.h5")


def _batchnorm_on_top():
    """A backbone whose top block (``block2``) is a BatchNormalization layer only."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="block2_bn")(x)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="block2_pool")(x),
                       name="backbone")
    base.trainable = False
    outer = keras.Input(SHAPE)
    head = keras.Sequential([keras.layers.Dense(2)], name="head")
    model = keras.Model(outer, head(base(outer, training=False)))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_a_stage_that_trains_nothing_new_is_refused_before_training():
    model = _batchnorm_on_top()
    x, y = data(16)
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=2, verbose=0, callbacks=[ProgressiveUnfreeze({0: "none", 1: 1})])
    message = str(info.value)
    assert "stage 2 (epoch 1, unfreeze=1) trains no new parameter" in message
    assert "block2 [block2_bn, block2_pool]" in message
    assert "blocks=" in message and "'from:LAYER_NAME'" in message
    assert "allow_empty_stages=True" in message and "Received: schedule=" in message
    # Refused before the first step: nothing trained.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_a_stage_that_trains_nothing_new_on_purpose_is_a_loud_warning():
    model = _batchnorm_on_top()
    x, y = data(16)
    callback = ProgressiveUnfreeze({0: "none", 1: 1}, allow_empty_stages=True)
    with pytest.warns(UserWarning, match="stage 2 .* trains no new parameter"):
        history = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    assert history.history["unfreeze_stage"] == [0, 1]
    # With train_bn the same stage trains the BatchNorm layer: no complaint.
    ProgressiveUnfreeze({0: "none", 1: 1}, train_bn=True).set_model(_batchnorm_on_top())


def test_blocks_from_a_callable_mapping_each_layer_to_its_block():
    model = nested_model()
    callback = ProgressiveUnfreeze({0: "none", 1: 1},
                                   blocks=lambda layer: layer.name.split("_")[0], verbose=1)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    callback.set_model(model)
    assert callback.found.blocks_source == "given"
    assert [(b.name, b.first, b.last) for b in callback.found.blocks] == \
        [("input", 0, 0), ("block1", 1, 3), ("block2", 4, 4), ("block3", 5, 6)]

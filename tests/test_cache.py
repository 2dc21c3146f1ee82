import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_tlft as tlft
from keras_tlft.cache import check_cacheable, fit_frozen, join_histories

HEAD = "gap,bn,dense:3:softmax"  # BatchNorm in the head: it trains, in training mode, both ways


def _tiny_backbone(dropout=0.0, plain_bn=False):
    def build(input_shape, weights=None, include_top=False):
        inputs = keras.Input(input_shape)
        x = keras.layers.Conv2D(6, 3, strides=2, name="conv")(inputs)
        norm = {"center": False, "scale": False} if plain_bn else {}
        x = keras.layers.BatchNormalization(name="bn", **norm)(x)
        x = keras.layers.ReLU(name="relu")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="drop")(x)
        return keras.Model(inputs, x)

    # min_input_size 12 > 8: build_model puts a Resizing layer before the preprocessing.
    return tlft.BackboneSpec(name="tiny", builder=build, preprocessing="tf", min_input_size=12)


def _model(seed=1, **kwargs):
    keras.utils.set_random_seed(seed)
    options = {"head": HEAD, "input_shape": (8, 8, 3), "weights": None}
    backbone = _tiny_backbone(**kwargs.pop("backbone", {}))
    model = tlft.build_model(backbone, 3, **{**options, **kwargs})
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def _values(weights):
    return [keras.ops.convert_to_numpy(w).copy() for w in weights]


def _assert_same_values(a, b, atol=1e-6):
    assert len(a) == len(b)
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=atol)


def _head(model):
    return _values(model.get_layer("head").weights)


def test_frozen_phase_then_model_fit_trains_exactly_like_one_plain_fit(capsys):
    # Same seed, no shuffling, float32: the head fit_frozen trains is the one model.fit trains,
    # and model.optimizer's state (Adam moments, iterations) carries into the later model.fit.
    x, y = _data()
    plain, cached = _model(), _model()
    after_two = []
    snapshot = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch == 1 and after_two.append(_head(plain))
    )
    common = {"batch_size": 16, "shuffle": False, "validation_split": 0.25, "verbose": 0}
    expected = plain.fit(x, y, epochs=3, callbacks=[snapshot], **common)
    capsys.readouterr()
    frozen = fit_frozen(cached, x, y, epochs=2, **common)
    assert capsys.readouterr().out == ""
    assert frozen.epoch == [0, 1]
    _assert_same_values(_head(cached), after_two[0])
    cached.fit(x, y, epochs=3, initial_epoch=2, **common)
    _assert_same_values(_head(cached), _head(plain))
    history = join_histories(frozen, cached.history)
    assert history.epoch == expected.epoch == [0, 1, 2]
    assert sorted(history.history) == sorted(expected.history)
    for key, values in expected.history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, atol=1e-6)


def test_progressive_recipe_continues_fit_frozen_exactly():
    # fit_frozen for the frozen stage, then model.fit with ProgressiveUnfreeze from there: the
    # same weights as one model.fit with the callback from epoch 0.
    unfreeze = pytest.importorskip("keras_tlft.unfreeze")
    x, y = _data()
    common = {"batch_size": 16, "shuffle": False, "verbose": 0}

    def schedule():
        return unfreeze.ProgressiveUnfreeze(schedule={0: "none", 2: "all"})

    plain, cached = _model(), _model()
    kernel = _values(cached.get_layer("backbone").weights)[0]
    plain.fit(x, y, epochs=3, callbacks=[schedule()], **common)
    fit_frozen(cached, x, y, epochs=2, **common)
    cached.fit(x, y, epochs=3, initial_epoch=2, callbacks=[schedule()], **common)
    assert not np.allclose(_values(cached.get_layer("backbone").weights)[0], kernel)
    # On TensorFlow the callback's Adam is one fused op a variable, which rounds (1 - beta) to
    # float32 where Keras's, in fit_frozen, rounds it from float64 (tests/test_fused_adam.py):
    # about 1e-6 apart after 3 epochs, against steps of about 1e-2.
    _assert_same_values(_values(cached.weights), _values(plain.weights), atol=1e-5)


def test_only_the_head_trains_and_the_model_stays_whole(tmp_path):
    x, y = _data()
    model = _model(backbone={"dropout": 0.0})  # Dropout(0) is the identity, not random
    head_before = _head(model)
    backbone_before = _values(model.get_layer("backbone").weights)
    fit_frozen(model, x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(_head(model)[-2], head_before[-2])  # the classifier's kernel
    _assert_same_values(_values(model.get_layer("backbone").weights), backbone_before, atol=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_full_model_evaluate_matches_the_heads_validation_metrics(capsys):
    x, y = _data()
    x_val, y_val = _data(24, seed=1)
    model = _model()
    history = fit_frozen(model, x, y, epochs=2, batch_size=16, validation_data=(x_val, y_val),
                         verbose=1)
    out = capsys.readouterr().out
    assert "Caching the backbone's features of the training data in memory" in out
    assert "Caching the backbone's features of the validation data in memory" in out
    evaluated = model.evaluate(x_val, y_val, batch_size=16, verbose=0, return_dict=True)
    assert evaluated["accuracy"] == pytest.approx(history.history["val_accuracy"][-1], abs=1e-5)
    assert evaluated["loss"] == pytest.approx(history.history["val_loss"][-1], abs=1e-5)
    cache = history.params["feature_cache"]
    assert cache["storage"] == ["memory", "memory"]
    assert cache["bytes"] == cache["memory_bytes"] == (48 + 24) * 5 * 5 * 6 * 4
    assert model.history is history


@pytest.mark.parametrize(
    "options, change, message",
    [
        ({"augmentation": "default"}, None,
         "random layers=['augmentation/random_flip', 'augmentation/random_rotation']"),
        ({"backbone": {"dropout": 0.5}}, None, "random layers=['backbone/drop']"),
        ({}, lambda m: setattr(m.get_layer("backbone"), "trainable", True),
         "the backbone is not frozen; model.fit would train 4 weights"),
        ({"backbone": {"plain_bn": True}},
         lambda m: setattr(m.get_layer("backbone").get_layer("bn"), "trainable", True),
         "trainable BatchNormalization=['backbone/bn']"),
    ],
    ids=["augmentation", "dropout-in-backbone", "backbone-not-frozen", "batchnorm-training"],
)
def test_refuses_when_caching_would_change_the_result(options, change, message):
    model = _model(**options)
    if change:
        change(model)
    x, y = _data(8)
    with pytest.raises(ValueError, match="Cannot cache the backbone's features") as info:
        fit_frozen(model, x, y, epochs=1, verbose=0)
    assert message in str(info.value)
    assert "model.fit" in str(info.value)
    with pytest.raises(ValueError, match="Cannot cache"):
        check_cacheable(model)


def test_refuses_a_model_that_cannot_be_cached_for_other_reasons(tmp_path):
    x, y = _data(8)
    uncompiled = tlft.build_model(_tiny_backbone(), 3, head=HEAD, input_shape=(8, 8, 3),
                                  weights=None)
    with pytest.raises(ValueError, match=r"compile the model first.*model.compiled=False"):
        fit_frozen(uncompiled, x, y, epochs=1)
    with pytest.raises(ValueError, match=r"No layer named 'base'.*Received: backbone='base'"):
        fit_frozen(_model(), x, y, epochs=1, backbone="base")
    with pytest.raises(ValueError, match=r"cache must be one of .*Received: cache="):
        fit_frozen(_model(), x, y, epochs=1, cache=str(tmp_path / "missing"))

    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    subclassed = Subclassed()
    subclassed.compile("adam", "mse")
    with pytest.raises(ValueError, match=r"functional or Sequential.*model=Subclassed"):
        fit_frozen(subclassed, x, y, epochs=1)


def _user_model(wire):
    """A compiled functional model around a frozen nested model named "features"."""
    inputs = keras.Input((8, 8, 3))
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3)], name="features")
    base.trainable = False
    outputs = keras.layers.Dense(3, activation="softmax")(wire(inputs, base))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _skip_connection(inputs, base):
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    return keras.layers.Concatenate()([pooled, keras.layers.Flatten()(inputs)])


def _called_twice(inputs, base):
    both = keras.layers.Add()([base(inputs), base(inputs * 2.0)])
    return keras.layers.GlobalAveragePooling2D()(both)


def test_refuses_a_graph_that_cannot_be_cut_at_the_backbone():
    x, y = _data(8)
    with pytest.raises(ValueError, match="the layers after the backbone also use the model's "
                                         "inputs, not only the backbone's output"):
        fit_frozen(_user_model(_skip_connection), x, y, backbone="features")
    with pytest.raises(ValueError, match="it is called 2 times. Received: backbone='features'"):
        fit_frozen(_user_model(_called_twice), x, y, backbone="features")


def _dataset(n=8):
    x, y = _data(n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


BAD_ARGUMENTS = [
    ({"epochs": -1}, "epochs must be a non-negative integer. Received: epochs=-1"),
    ({"max_memory_bytes": -5}, "Received: max_memory_bytes=-5"),
    ({"x": [1, 2, 3]}, "x must be arrays (or a dict of arrays), a tf.data.Dataset or a "
                       "keras.utils.PyDataset. Received: x=list"),
    ({"x": _dataset}, "it yields the targets itself: y and sample_weight must be None"),
    ({"x": _dataset, "y": None, "batch_size": 4},
     "its own batches are used: batch_size must be None. Received: batch_size=4"),
    ({"x": lambda: _dataset().repeat(), "y": None},
     "x must be finite to be cached: fit_frozen reads it once"),
    ({"validation_split": 1.5}, "Received: validation_split=1.5"),
    ({"x": _dataset, "y": None, "validation_split": 0.5},
     "validation_split only splits arrays; pass validation_data with a dataset"),
]


def test_bad_arguments_are_refused_with_the_fix():
    # One test for the whole table: each case fails before any training.
    x, y = _data(8)
    model = _model()
    for arguments, message in BAD_ARGUMENTS:
        arguments = {"x": x, "y": y, **arguments}
        if callable(arguments["x"]):
            arguments["x"] = arguments["x"]()
        with pytest.raises(ValueError) as info:
            fit_frozen(model, **arguments, verbose=0)
        assert message in str(info.value), arguments


def test_disk_cache_trains_the_same_head_and_leaves_no_file(tmp_path):
    x, y = _data()
    in_memory, on_disk = _model(), _model()
    fit_frozen(in_memory, x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    history = fit_frozen(on_disk, x, y, epochs=2, batch_size=16, shuffle=False,
                         validation_data=_data(16, seed=1), cache=tmp_path, verbose=0)
    assert history.params["feature_cache"]["storage"] == ["disk", "disk"]
    assert history.params["feature_cache"]["memory_bytes"] == 0
    _assert_same_values(_head(on_disk), _head(in_memory), atol=0)
    assert os.listdir(tmp_path) == []


class _Broken(keras.utils.PyDataset):
    """Two good batches, then an error, as a failing data pipeline would."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise OSError("disk read failed")
        return self.x[i * 8 : (i + 1) * 8], self.y[i * 8 : (i + 1) * 8]


def test_a_failed_extraction_leaves_no_file_behind(tmp_path):
    x, y = _data(32)
    with pytest.raises(OSError, match="disk read failed"):
        fit_frozen(_model(), _Broken(x, y), epochs=1, cache=tmp_path, verbose=0)
    assert os.listdir(tmp_path) == []


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        part = slice(i * self.size, (i + 1) * self.size)
        return self.x[part], self.y[part]


def test_datasets_train_the_same_head_as_arrays(tmp_path):
    x, y = _data()
    arrays, dataset, py_dataset = _model(), _model(), _model()
    fit_frozen(arrays, x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    # An unknown length: the cache starts in memory and moves to disk past 1.5 batches.
    batches = batches.filter(lambda images, labels: True)
    row_bytes = 5 * 5 * 6 * 4
    history = fit_frozen(dataset, batches, epochs=2, shuffle=False, cache=tmp_path,
                         max_memory_bytes=24 * row_bytes, verbose=0)
    assert history.params["feature_cache"]["storage"] == ["disk"]
    fit_frozen(py_dataset, _Batches(x, y, 16), epochs=2, shuffle=False, verbose=0)
    _assert_same_values(_head(dataset), _head(arrays))
    _assert_same_values(_head(py_dataset), _head(arrays))
    assert os.listdir(tmp_path) == []


def test_a_user_model_with_a_named_backbone_trains_like_plain_fit():
    def user_model():
        keras.utils.set_random_seed(3)
        base = _tiny_backbone().build(input_shape=(8, 8, 3))
        base.trainable = False
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Rescaling(1 / 255),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ])
        model.compile("sgd", "sparse_categorical_crossentropy")
        return model, base

    x, y = _data()
    (plain, _), (cached, base) = user_model(), user_model()
    plain.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    fit_frozen(cached, x, y, epochs=2, batch_size=16, shuffle=False, backbone=base, verbose=0)
    _assert_same_values(_values(cached.layers[-1].weights), _values(plain.layers[-1].weights))


def test_callbacks_see_the_full_model_and_can_stop_it():
    model = _model()
    seen = []

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model)
            self.model.stop_training = epoch == 1

    x, y = _data()
    history = fit_frozen(model, x, y, epochs=5, callbacks=[StopAfterTwo()], verbose=0)
    assert history.epoch == [0, 1]
    assert all(m is model for m in seen)


def test_a_callback_that_unfreezes_the_backbone_fails_the_run():
    class Unfreeze(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.get_layer("backbone").trainable = True

    x, y = _data(16)
    with pytest.raises(RuntimeError, match=r"at epoch 1, so the cached features are stale"):
        fit_frozen(_model(), x, y, epochs=3, callbacks=[Unfreeze()], verbose=0)

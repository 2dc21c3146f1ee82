"""Keras's Adam as one ResourceApplyAdam op per variable (TensorFlow): the same training as
Keras's own update within float32 rounding, and Keras's own update wherever the fused op would
not be Keras's Adam."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import data, nested_model  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.callbacks import optim  # noqa: E402
from keras_tlft.callbacks.fused_adam import fused_adam  # noqa: E402

on_tf = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                           reason="the fused op is TensorFlow's")
SCHEDULE = {0: "none", 1: 1, 2: "all"}


def no_cache(key, holder, make):
    return make()


@pytest.fixture
def applied(monkeypatch):
    """How many ResourceApplyAdam ops were traced."""
    import tensorflow as tf

    count, real = {"ops": 0}, tf.raw_ops.ResourceApplyAdam

    def counting(**kwargs):
        count["ops"] += 1
        return real(**kwargs)

    monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", counting)
    return count


def train(optimizer, stage_change, fused=True):
    with pytest.MonkeyPatch.context() as patch:
        if not fused:
            patch.setattr(optim, "fused_adam", lambda optimizer, per_step: None)
        return _train(optimizer, stage_change)


def _train(optimizer, stage_change):
    model = nested_model()
    start = [np.array(w) for w in model.get_weights()]
    model.compile(optimizer, "mse")
    x, y = data(16)
    unfreeze = ProgressiveUnfreeze(SCHEDULE, backbone_lr_ratio=0.3, warmup_steps=2,
                                   stage_change=stage_change, compile_ahead=False)
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False, callbacks=[unfreeze])
    return model, start, [np.array(w) for w in model.get_weights()]


@on_tf
@pytest.mark.parametrize(("make", "stage_change"), [
    (lambda: keras.optimizers.Adam(1e-2), "retrace"),
    (lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1), "retrace"),
    (lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5),
                                   beta_1=0.8, beta_2=0.99, epsilon=1e-4), "retrace"),
    (lambda: keras.optimizers.Adam(1e-2), "mask"),
], ids=["Adam", "AdamW", "Adam-schedule-betas", "Adam-masked"])
def test_it_trains_as_keras_own_adam_within_float32_rounding(make, stage_change, applied):
    _, start, keras_own = train(make(), stage_change, fused=False)
    assert applied["ops"] == 0
    model, _, fused = train(make(), stage_change)
    # One op per trainable variable in each trace: a retrace per stage (the head's 2, then
    # block3's conv and the head's, then all), or one masked step over all.
    union = len(model.trainable_variables)
    assert applied["ops"] == (2 + 4 + union if stage_change == "retrace" else union)
    moved = 0
    for path, first, ours, theirs in zip([w.path for w in model.weights], start, fused,
                                         keras_own):
        # (1 - beta) is rounded to float32 by the kernel, from float64 by Keras: 5e-5 apart
        # for beta_2=0.999, far below what a wrong step (rate, bias correction) would move.
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6, err_msg=path)
        moved += not np.allclose(ours, first, rtol=1e-3, atol=1e-4)
    assert moved >= 8  # the head and the unfrozen convolutions trained


@on_tf
def test_one_step_is_keras_own_step():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    values = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(3)]

    def steps(use_fused):
        adam = keras.optimizers.Adam(0.05)
        variable = keras.Variable(values)
        adam.build([variable])
        update = fused_adam(adam, no_cache)
        for g in grads:
            if use_fused:
                assert update(tf.constant(g), variable, adam.learning_rate) is True
                adam.iterations.assign_add(1)
            else:
                adam.apply([tf.constant(g)], [variable])
        return np.array(variable)

    ours, theirs = steps(True), steps(False)
    assert not np.allclose(ours, values, atol=1e-2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


@on_tf
def test_keras_own_update_where_the_op_would_not_be_keras_adam():
    import tensorflow as tf

    class Mine(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            return super().update_step(gradient, variable, learning_rate)

    for other in (keras.optimizers.Adam(amsgrad=True), Mine(), keras.optimizers.SGD(),
                  keras.optimizers.Nadam()):
        assert fused_adam(other, no_cache) is None, type(other).__name__

    adam = keras.optimizers.Adam()
    variable, half = keras.Variable(np.ones((3, 2), "float32")), keras.Variable(
        np.ones((3, 2), "float16"), dtype="float16")
    adam.build([variable, half])
    update = fused_adam(adam, no_cache)
    sparse = tf.IndexedSlices(tf.ones((1, 2)), tf.constant([0]), tf.constant([3, 2]))
    assert update(sparse, variable, adam.learning_rate) is False
    assert update(tf.ones((3, 2), "float16"), half, adam.learning_rate) is False
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert update(tf.ones((3, 2)), variable, adam.learning_rate) is False
    np.testing.assert_array_equal(np.array(variable), 1.0)  # none of them changed it


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="other backends")
def test_other_backends_keep_keras_update():
    assert fused_adam(keras.optimizers.Adam(), no_cache) is None

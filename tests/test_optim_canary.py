"""Canaries for the optimizer patches of ProgressiveUnfreeze, per backend and per optimizer.

One step of each unfrozen block, at its per-block learning rate, must be exactly the step Keras
itself takes at that rate: a plain, unpatched optimizer of the same class at that rate, applied
to the same starting values and the same gradient. If a Keras release routes the update around
our patches (a new backend override of `update_step` or `_backend_update_step`...), the blocks
train at the optimizer's own rate and these tests fail, where "did the block move" would not.

This process runs them on its own backend (normally TensorFlow); the last test reruns this file
on JAX and PyTorch in subprocesses, as tests/test_backends.py does for the callback's suite.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_tlft import ProgressiveUnfreeze

HEAD_LR = 0.01
RATIO = 0.1  # the top block trains at HEAD_LR * RATIO
DECAY = 0.5  # the block below it at HEAD_LR * RATIO * DECAY

# Every built-in optimizer class, each built at a given learning rate.
OPTIMIZERS = {
    "SGD": lambda o, lr: o.SGD(lr),
    "SGD_momentum": lambda o, lr: o.SGD(lr, momentum=0.9, nesterov=True),
    "Adam": lambda o, lr: o.Adam(lr),
    "AdamW": lambda o, lr: o.AdamW(lr, weight_decay=0.1),
    "Nadam": lambda o, lr: o.Nadam(lr),
    "Adamax": lambda o, lr: o.Adamax(lr),
    "RMSprop": lambda o, lr: o.RMSprop(lr, momentum=0.5, centered=True),
    "Adagrad": lambda o, lr: o.Adagrad(lr),
    "Adadelta": lambda o, lr: o.Adadelta(lr * 100),
    "Ftrl": lambda o, lr: o.Ftrl(lr),
    "Lion": lambda o, lr: o.Lion(lr, weight_decay=0.1),
    "Lamb": lambda o, lr: o.Lamb(lr),
    "Adafactor": lambda o, lr: o.Adafactor(lr),
    "Muon": lambda o, lr: o.Muon(lr),
}


class GradientRecorder(keras.optimizers.Optimizer):
    """Stores each gradient it receives in a slot (inside the compiled step, on every backend)
    and changes nothing: the exact gradient of one step, without backend-specific code."""

    def build(self, variables):
        super().build(variables)
        self.seen = [self.add_variable_from_reference(v, "gradient") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        self.seen[self._get_variable_index(variable)].assign(gradient)


def _model(seed=0):
    """A nested backbone of two Dense blocks and a head, backbone frozen, as build_model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, activation="tanh", name="block1_dense")(inputs)
    x = keras.layers.Dense(3, activation="tanh", name="block2_dense")(x)
    base = keras.Model(inputs, x, name="backbone")
    base.trainable = False
    outer = keras.Input((5,))
    head = keras.Sequential([keras.layers.Dense(2, name="dense")], name="head")
    return keras.Model(outer, head(base(outer)))


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")


def _numpy(variables):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


@functools.lru_cache(maxsize=1)
def _one_step_gradients():
    """The gradient of every variable at the first step, all blocks unfrozen."""
    model = _model()
    model.get_layer("backbone").trainable = True
    recorder = GradientRecorder(learning_rate=1.0)
    model.compile(recorder, "mse")
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return {v.path: keras.ops.convert_to_numpy(g) for v, g in
            zip(model.trainable_variables, recorder.seen)}


def _keras_step(name, lr, start, gradients):
    """The step a plain optimizer of class ``name`` at ``lr`` takes from ``start``."""
    plain = OPTIMIZERS[name](keras.optimizers, lr)
    variables = [keras.Variable(value, name=path.split("/")[-1]) for path, value in start.items()]
    plain.apply([keras.ops.convert_to_tensor(gradients[path]) for path in start], variables)
    return {path: keras.ops.convert_to_numpy(v) - start[path] for path, v in
            zip(start, variables)}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_step_of_each_block_is_the_step_keras_takes_at_its_learning_rate(name):
    gradients = _one_step_gradients()
    model = _model()
    model.compile(OPTIMIZERS[name](keras.optimizers, HEAD_LR), "mse")
    before = _numpy(model.trainable_variables + model.get_layer("backbone").weights)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[
        ProgressiveUnfreeze({0: "all"}, backbone_lr_ratio=RATIO, block_lr_decay=DECAY)])
    after = _numpy(model.trainable_variables)
    rates = {"block2_dense": HEAD_LR * RATIO, "block1_dense": HEAD_LR * RATIO * DECAY,
             "head": HEAD_LR}
    for prefix, lr in rates.items():
        start = {p: v for p, v in before.items() if p.startswith(prefix)}
        assert len(start) == 2, start  # kernel and bias
        ours = {p: after[p] - start[p] for p in start}
        expected = _keras_step(name, lr, start, gradients)
        for path in start:
            np.testing.assert_allclose(ours[path], expected[path], rtol=1e-4, atol=1e-8,
                                       err_msg=f"{name}: {path} at learning rate {lr}")
        if lr != HEAD_LR:  # the canary can tell the block's rate from the optimizer's own
            other = _keras_step(name, HEAD_LR, start, gradients)
            assert any(not np.allclose(other[p], expected[p], rtol=1e-2) for p in start)


@pytest.mark.heavy
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_canaries_pass_on(backend):
    if keras.backend.backend() == backend:
        pytest.skip(f"this process already runs the canaries on {backend}")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed: pip install -e '.[backends]'")
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "not canaries_pass_on"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent, timeout=1200,
        check=False,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    print(f"{backend}: {summary}")
    assert proc.returncode == 0, f"on {backend}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"

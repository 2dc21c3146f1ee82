"""Each stage's train step prepared ahead, while the stage before it trains (JAX: compiled;
TensorFlow: traced and instantiated): a stage change installs it instead of retracing, and the
model trains exactly as when each stage is traced at its first step. The heavy tier runs this
file on JAX (tests/test_backends.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import data, nested_model  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402

BACKEND = keras.backend.backend()
on_jax = pytest.mark.skipif(BACKEND != "jax", reason="JAX's executables")
on_tf = pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's gated step")
ahead_backends = pytest.mark.skipif(BACKEND not in ("jax", "tensorflow"),
                                    reason="JAX and TensorFlow prepare stages ahead")
NAME = {"jax": "JAX", "tensorflow": "TensorFlow"}.get(BACKEND)
BUSY = ("TensorFlow computes on every CPU core: no core is spare for the background "
        "instantiation, which would slow the steps more than it saves")


@pytest.fixture(autouse=True)
def spare_core(monkeypatch):
    """On TensorFlow the callback prepares ahead only with a core to spare, which this process
    (TensorFlow on every core) lacks: the tests say there is one, but where they say not."""
    monkeypatch.setattr("keras_tlft.callbacks.compile_ahead.spare_core", lambda: True)
SCHEDULE = {0: "none", 1: 1, 2: 2, 3: "all"}


class Weights(keras.callbacks.Callback):
    """The weights at each epoch's end; ``tamper`` runs after epoch 0's first step."""

    def __init__(self, tamper=None):
        super().__init__()
        self.weights, self.tamper = [], tamper

    def on_train_batch_end(self, batch, logs=None):
        if self.tamper is not None:
            self.tamper()
            self.tamper = None

    def on_epoch_end(self, epoch, logs=None):
        self.names = [w.path for w in self.model.weights]
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def run(ahead=True, tamper=None, schedule=SCHEDULE, steps_per_execution=1, **options):
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", steps_per_execution=steps_per_execution)
    x, y = data(20)  # batches of 8, 8 and 4: two batch shapes
    unfreeze = ProgressiveUnfreeze(schedule, stage_change="retrace", compile_ahead=ahead,
                                   **options)
    watch = Weights(tamper and (lambda: tamper(unfreeze)))
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, shuffle=False,
              validation_data=(x[:8], y[:8]), callbacks=[unfreeze, watch])
    return unfreeze, watch


def assert_same_training(a: Weights, b: Weights, noise=()) -> None:
    """The same weights at every epoch's end; those named in ``noise`` only within 1e-3 (their
    updates are rounding noise, see below)."""
    assert len(a.weights) == len(b.weights) == 5
    for epoch, (wa, wb) in enumerate(zip(a.weights, b.weights)):
        for name, va, vb in zip(a.names, wa, wb):
            atol = 1e-3 if "/".join(name.split("/")[-2:]) in noise else 1e-7
            np.testing.assert_allclose(vb, va, rtol=1e-6, atol=atol,
                                       err_msg=f"epoch {epoch}, {name}")


# Under bn="train" the tiny backbone's first convolution feeds a BatchNormalization that
# normalises with the batch's statistics, so the gradient of that convolution's bias is zero
# but for rounding (about 1e-9), and Adam's normalised step turns the rounding into moves of
# about 1e-4: on TensorFlow a step traced differently from Keras's own (the gated step inside a
# tf.cond, on Keras 3.16) rounds differently there, and the BatchNorm's moving mean follows.
BIAS_BEFORE_BATCHNORM = {"block1_conv/bias", "block1_bn/moving_mean"}


@ahead_backends
@pytest.mark.parametrize("options", [{}, {"warmup_steps": 2, "backbone_lr_ratio": 0.5},
                                     {"bn": "train", "block_lr_decay": 0.5}],
                         ids=["plain", "warmup", "bn-train"])
def test_stages_compiled_ahead_train_as_a_retrace_does(options):
    ahead, with_ahead = run(True, **options)
    retraced, without = run(False, **options)
    assert ahead.compiled_ahead == (True, f"{NAME}, an epoch schedule")
    assert retraced.compiled_ahead == (False, "compile_ahead=False")
    compiled = ahead._ahead
    # Stages 2 to 4; on JAX each for the full batch and the last, smaller one (on TensorFlow
    # one function takes both); each change used them (a warm-up's first iteration was
    # predicted right).
    per_stage = 2 if BACKEND == "jax" else 1
    assert (compiled.compiled, compiled.used, compiled.missed) == (3 * per_stage, 3, [])
    noise = BIAS_BEFORE_BATCHNORM if BACKEND == "tensorflow" and "bn" in options else ()
    assert_same_training(with_ahead, without, noise)
    # Preparing a step ran none of it: 5 epochs of 3 batches are 15 optimizer steps.
    assert int(ahead.model.optimizer.iterations) == 15
    # The frozen block trained only once its stage began.
    first_conv = 0
    assert np.array_equal(with_ahead.weights[0][first_conv], with_ahead.weights[2][first_conv])
    assert not np.array_equal(with_ahead.weights[2][first_conv],
                              with_ahead.weights[3][first_conv])


@ahead_backends
def test_a_plan_whose_rules_differ_from_the_stage_is_not_used():
    def other_rules(unfreeze):  # as if the warm-up's first iteration had been guessed wrong
        plan = unfreeze._ahead.plan
        plan.table = {key: None for key in plan.table}

    ahead, with_ahead = run(True, tamper=other_rules, warmup_steps=2)
    _, without = run(False, warmup_steps=2)
    assert ahead._ahead.used == 2
    assert ahead._ahead.missed == ["stage 2: planned for stage 2 with other learning-rate rules"]
    assert_same_training(with_ahead, without)


@on_jax
def test_keras_fit_calls_the_installed_step_with_the_state_laid_out_as_compat_says():
    import jax

    from keras_tlft import _keras_compat as compat

    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(20)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # builds the optimizer and metrics
    jitted, layouts = jax.jit(model.train_step), []

    class Install(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            def step(state, iterator):
                layouts.append(jax.tree_util.tree_map(
                    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state))
                return jitted(state, next(iterator))

            compat.set_jax_train_function(model, step)

    before = [np.array(w) for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[Install()])
    assert len(layouts) == 3  # one call a batch
    assert all(layout == compat.jax_state_layout(model) for layout in layouts)
    assert not all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.get_weights()))


@on_jax
def test_an_executable_for_other_arguments_is_dropped_before_it_runs():
    from concurrent.futures import Future

    import jax

    from keras_tlft import _keras_compat as compat

    def wrong_executable(unfreeze):  # compiled for stage 1's state, not stage 2's
        model, plan = unfreeze.model, unfreeze._ahead.plan
        for key, future in list(plan.futures.items()):
            future.result()
            batch = unfreeze._ahead.shapes[key]
            other = Future()
            other.set_result(jax.jit(model.train_step).lower(compat.jax_state_layout(model),
                                                             batch).compile())
            plan.futures[key] = other

    ahead, with_ahead = run(True, tamper=wrong_executable)
    _, without = run(False)
    assert ahead._ahead.missed[0].startswith("not the planned arguments")
    assert_same_training(with_ahead, without)


@ahead_backends
@pytest.mark.parametrize(("schedule", "steps_per_execution", "reason"), [
    ("plateau:patience=1", 1, "a plateau schedule: its stage changes are not known ahead"),
    (SCHEDULE, 2, "steps_per_execution above 1"),
])
def test_where_stages_cannot_compile_ahead_they_compile_at_their_first_step(
        schedule, steps_per_execution, reason):
    unfreeze, watch = run(True, schedule=schedule, steps_per_execution=steps_per_execution)
    assert unfreeze.compiled_ahead == (False, reason)
    assert unfreeze._ahead is None
    assert len(watch.weights) == 5


@pytest.mark.skipif(BACKEND != "torch", reason="the other backend's reason")
def test_pytorch_says_why_not():
    unfreeze, _ = run(True, schedule={0: "none", 1: "all"})
    assert unfreeze.compiled_ahead == (
        False, "the torch backend (JAX and TensorFlow only: its steps are not traced)")


@on_tf
def test_tensorflow_with_xla_says_why_not():
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=True)
    unfreeze = ProgressiveUnfreeze({0: "none", 1: "all"}, stage_change="retrace")
    x, y = data(8)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[unfreeze])
    assert unfreeze.compiled_ahead == (
        False, "jit_compile=True on TensorFlow: XLA compiles the step at its first call")


@on_tf
def test_tensorflow_on_every_core_says_why_not(monkeypatch):
    import tensorflow as tf

    from keras_tlft.callbacks import compile_ahead

    monkeypatch.undo()
    if not tf.config.list_logical_devices("GPU"):  # TensorFlow's default: every core
        assert tf.config.threading.get_intra_op_parallelism_threads() == 0
        assert compile_ahead.spare_core() is False
    monkeypatch.setattr(compile_ahead, "spare_core", lambda: False)
    unfreeze, watch = run(True, schedule={0: "none", 1: "all"})
    assert unfreeze.compiled_ahead == (False, BUSY)
    assert unfreeze._ahead is None
    assert len(watch.weights) == 5


@on_tf
def test_the_gated_step_runs_nothing_when_told_not_to_and_trains_as_keras_when_told_to():
    import tensorflow as tf

    from keras_tlft.callbacks.compile_ahead_tf import gated_step, zeros_of

    def fresh():
        keras.utils.set_random_seed(0)
        model = nested_model()
        model.compile(keras.optimizers.Adam(1e-2), "mse", metrics=["mae"])
        model.fit(*data(8), batch_size=8, epochs=1, verbose=0)  # builds everything
        return model

    def state(model):
        return [np.array(v) for v in
                model.variables + model.optimizer.variables + model.metrics_variables]

    x, y = data(8)
    batch = (tf.constant(x), tf.constant(y))
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), batch)
    model, keras_model = fresh(), fresh()
    step = gated_step(model).get_concrete_function(spec, tf.TensorSpec([], tf.bool))
    before = state(model)
    skipped = step(zeros_of(spec), tf.constant(False))
    assert all(float(v) == 0 for v in skipped.values())
    assert all(np.array_equal(a, b) for a, b in zip(before, state(model)))
    logs = step(batch, tf.constant(True))
    keras_logs = keras_model.train_step(batch)
    assert set(logs) == set(keras_logs)
    for a, b in zip(state(model), state(keras_model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not all(np.array_equal(a, b) for a, b in zip(before, state(model)))


@on_tf
def test_data_the_gated_step_cannot_take_goes_to_keras_own_step():
    unfreeze, _ = run(True, schedule={0: "none", 1: "all"})
    model = unfreeze.model
    before = [np.array(w) for w in model.get_weights()]
    model.train_on_batch(*data(8))  # Keras hands its step a Python generator
    assert unfreeze._ahead.keras_step == "data other than a tf.data iterator of tensors"
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_compile_ahead_is_a_bool_in_the_config():
    with pytest.raises(TypeError, match="compile_ahead must be True or False"):
        ProgressiveUnfreeze(compile_ahead="yes")
    config = ProgressiveUnfreeze(compile_ahead=False).get_config()
    assert config["compile_ahead"] is False
    assert ProgressiveUnfreeze.from_config(config).compile_ahead is False

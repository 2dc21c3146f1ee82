"""Each stage's train step compiled ahead, while the stage before it trains (JAX): a stage change
installs the executable instead of recompiling, and the model trains exactly as when each stage
compiles at its first step. The heavy tier runs this file on JAX (tests/test_backends.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import data, nested_model  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402

on_jax = pytest.mark.skipif(keras.backend.backend() != "jax",
                            reason="only JAX compiles stages ahead")
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


def assert_same_training(a: Weights, b: Weights) -> None:
    assert len(a.weights) == len(b.weights) == 5
    for epoch, (wa, wb) in enumerate(zip(a.weights, b.weights)):
        for va, vb in zip(wa, wb):
            np.testing.assert_allclose(vb, va, rtol=1e-6, atol=1e-7, err_msg=f"epoch {epoch}")


@on_jax
@pytest.mark.parametrize("options", [{}, {"warmup_steps": 2, "backbone_lr_ratio": 0.5},
                                     {"bn": "train", "block_lr_decay": 0.5}],
                         ids=["plain", "warmup", "bn-train"])
def test_stages_compiled_ahead_train_as_a_retrace_does(options):
    ahead, with_ahead = run(True, **options)
    retraced, without = run(False, **options)
    assert ahead.compiled_ahead == (True, "JAX, an epoch schedule")
    assert retraced.compiled_ahead == (False, "compile_ahead=False")
    compiled = ahead._ahead
    # Stages 2 to 4, each for the full batch and the last, smaller one; each change used them
    # (a warm-up's first iteration was predicted right).
    assert (compiled.compiled, compiled.used, compiled.missed) == (6, 3, [])
    assert_same_training(with_ahead, without)
    # The frozen block trained only once its stage began.
    first_conv = 0
    assert np.array_equal(with_ahead.weights[0][first_conv], with_ahead.weights[2][first_conv])
    assert not np.array_equal(with_ahead.weights[2][first_conv],
                              with_ahead.weights[3][first_conv])


@on_jax
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


@on_jax
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


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="the other backends' reason")
def test_other_backends_say_why_not():
    unfreeze, _ = run(True, schedule={0: "none", 1: "all"})
    backend = keras.backend.backend()
    assert unfreeze.compiled_ahead == (
        False, f"the {backend} backend (JAX only: its stage change is mostly XLA's compile)")


def test_compile_ahead_is_a_bool_in_the_config():
    with pytest.raises(TypeError, match="compile_ahead must be True or False"):
        ProgressiveUnfreeze(compile_ahead="yes")
    config = ProgressiveUnfreeze(compile_ahead=False).get_config()
    assert config["compile_ahead"] is False
    assert ProgressiveUnfreeze.from_config(config).compile_ahead is False

"""ProgressiveUnfreeze refuses or warns about what would silently go wrong (issues #11 and #15):
MultiOptimizer, two callbacks in one fit, an empty schedule, stages after the last epoch, a NaN
metric in a plateau stage; and its verbose line explains model.summary()'s optimizer count.

Runs on every backend (tests/test_backends.py runs test_unfreeze*.py on JAX and PyTorch)."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import data, nested_model, values  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402


def fit(model, callbacks, epochs=3, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=callbacks, **kwargs)


@pytest.mark.skipif(not hasattr(keras.optimizers, "MultiOptimizer"),
                    reason="keras.optimizers.MultiOptimizer is public from Keras 3.15")
def test_multi_optimizer_is_refused_before_training():
    model = nested_model()
    before = values(model.weights)
    optimizer = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(
        keras.optimizers.Adam(1e-2), {"backbone/.*": keras.optimizers.SGD(1e-3)}))
    with pytest.raises(ValueError) as info:
        fit(model, [ProgressiveUnfreeze({0: "none", 1: "all"})], optimizer=optimizer)
    message = str(info.value)
    assert "cannot train with keras.optimizers.MultiOptimizer" in message
    assert "backbone_lr, backbone_lr_ratio and block_lr_decay" in message
    assert "Received: optimizer=MultiOptimizer(" in message
    after = values(model.weights)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # not one step ran


def test_two_progressive_unfreeze_callbacks_in_one_fit_are_refused():
    model = nested_model()
    before = values(model.weights)
    first, second = ProgressiveUnfreeze({0: "none", 1: 1}), ProgressiveUnfreeze("gradual")
    with pytest.raises(ValueError) as info:
        fit(model, [first, second])
    message = str(info.value)
    assert "Two ProgressiveUnfreeze callbacks in one fit" in message
    assert "Received: schedules" in message
    after = values(model.weights)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_one_callback_per_fit_after_another_fit_is_fine():
    model = nested_model()
    fit(model, [ProgressiveUnfreeze({0: "none", 1: 1})], epochs=2)
    history = fit(model, [ProgressiveUnfreeze({0: 1, 1: "all"})], epochs=2)
    assert history.history["unfreeze_stage"] == [0, 1]


@pytest.mark.parametrize("schedule", [{}, []])
def test_empty_schedule_is_refused_at_construction(schedule):
    with pytest.raises(ValueError, match="it has no stages"):
        ProgressiveUnfreeze(schedule)


def test_stages_after_the_last_epoch_warn_at_train_begin():
    with pytest.warns(UserWarning) as record:
        history = fit(nested_model(), [ProgressiveUnfreeze({0: "none", 2: 1, 5: "all"})],
                      epochs=3)
    messages = [str(w.message) for w in record if "never run" in str(w.message)]
    assert len(messages) == 1
    assert "1 of the schedule's 3 stages begin after the last epoch" in messages[0]
    assert "epochs=3" in messages[0] and "unfreeze=all at epoch 5" in messages[0]
    assert history.history["unfreeze_stage"] == [0, 0, 1]


def test_generated_stages_after_the_last_epoch_suggest_max_blocks():
    with pytest.warns(UserWarning, match="2 of the schedule's 4 stages begin after the last "
                                         "epoch") as record:
        fit(nested_model(), [ProgressiveUnfreeze("gradual")], epochs=2)
    assert any("set max_blocks or a smaller every" in str(w.message) for w in record)


def test_a_schedule_that_fits_the_run_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fit(nested_model(), [ProgressiveUnfreeze({0: "none", 2: "all"})], epochs=3)


class Score(keras.callbacks.Callback):
    """Writes the next of ``scores`` into the logs as ``score`` at every epoch's end."""

    def __init__(self, scores):
        super().__init__()
        self.scores = iter(scores)

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = next(self.scores)


def test_nan_metric_in_the_first_epochs_of_a_plateau_stage_counts_as_no_improvement():
    # Stage 1 begins at epoch 4 with two NaN values: neither is an improvement (as EarlyStopping
    # counts them), so with patience 2 stage 2 begins at epoch 6.
    scores = [1.0, 0.9, 0.95, 0.97, math.nan, math.nan, 0.3, 0.2]
    cb = ProgressiveUnfreeze("plateau:patience=2,monitor=score")
    history = fit(nested_model(), [Score(scores), cb], epochs=8)
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0, 1, 1, 2, 2]


def test_a_metric_that_stays_nan_still_moves_the_plateau_on():
    cb = ProgressiveUnfreeze("plateau:patience=2,monitor=score")
    history = fit(nested_model(), [Score([math.nan] * 6), cb], epochs=6)
    assert history.history["unfreeze_stage"] == [0, 0, 1, 1, 2, 2]


def test_verbose_says_model_summary_counts_the_optimizer_variables(capsys):
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[ProgressiveUnfreeze({0: "none", 1: "all"}, verbose=1)])
    out = capsys.readouterr().out
    n_params = sum(math.prod(v.shape) for v in model.optimizer.variables)
    assert (f"{len(model.optimizer.variables)} variables, {n_params:,} parameters, which "
            "model.summary() counts as 'Optimizer params'") in out
    # The figure is the one model.summary() prints (Keras counts every optimizer variable).
    model.summary(print_fn=lambda line, **kwargs: print(line))
    summary = capsys.readouterr().out
    assert f"Optimizer params: {n_params:,}" in summary


@pytest.mark.parametrize("schedule", [{0: 2, 2: 1}, {0: "all", 2: "none"}])
def test_a_schedule_that_freezes_blocks_again_is_refused_before_training(schedule):
    model = nested_model()
    before = [np.array(w) for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"Invalid schedule at epoch 2 .*: it freezes again what "
                                         r"the stage before trained .*allow_refreeze=True"):
        fit(model, [ProgressiveUnfreeze(schedule)], epochs=3)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_allow_refreeze_runs_a_schedule_that_freezes_blocks_again():
    history = fit(nested_model(), [ProgressiveUnfreeze({0: 2, 2: 1}, allow_refreeze=True)],
                  epochs=3)
    assert history.history["unfrozen_blocks"] == [2, 2, 1]


def test_a_new_model_with_a_trainable_backbone_gets_no_warning_about_a_skipped_state():
    # On JAX and PyTorch, fit builds the optimizer of a new model before any callback sees
    # it: that is no model loaded with its optimizer state skipped (issue 23, item 5).
    model = nested_model()
    model.get_layer("backbone").trainable = True  # as a user's Model(base, head) often is
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, [ProgressiveUnfreeze({0: 1, 2: "all"})], epochs=1)
    assert history.history["unfrozen_blocks"] == [1]
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "never stepped" in m or "resume_from" in m], said

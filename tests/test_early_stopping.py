"""StageEarlyStopping next to ProgressiveUnfreeze (runs on every backend: test_backends)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.scripted import fit_scripted  # noqa: E402
from helpers_unfreeze.tiny import nested_model  # noqa: E402

from keras_tlft import ProgressiveUnfreeze, StageEarlyStopping  # noqa: E402

# Stage 0 stalls after epoch 3, stage 1 after epoch 6; the last stage, from epoch 7, improves
# once (0.4) and then stalls for two epochs.
SCORES = [1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.4, 0.45, 0.5, 0.3, 0.2]


def plateau(**options):
    return ProgressiveUnfreeze(["none", 1, "all"], trigger="plateau", monitor="score",
                               patience=2, **options)


def test_plain_early_stopping_ends_a_plateau_schedule_in_its_first_stage():
    stop = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=2)
    history = fit_scripted(SCORES, [plateau(), stop])
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0]


@pytest.mark.parametrize("early_stopping_first", [False, True])
def test_stage_early_stopping_stops_only_at_a_plateau_of_the_last_stage(early_stopping_first):
    stop = StageEarlyStopping(monitor="score", mode="min", patience=2)
    callbacks = [stop, plateau()] if early_stopping_first else [plateau(), stop]
    history = fit_scripted(SCORES, callbacks)
    # The plateaus of stages 0 and 1 began the next stage; the last one's (epochs 8, 9) ended it.
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert stop.stopped_epoch == 9


def test_the_wait_counts_from_the_first_epoch_of_the_last_stage():
    # Stages 0 and 1 stall at once (patience 1): the last stage begins at epoch 2, and
    # patience=3 epochs of it run even though the metric stalled from epoch 1 on.
    stop = StageEarlyStopping(monitor="score", mode="min", patience=3)
    history = fit_scripted([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
                           [ProgressiveUnfreeze(["none", "all"], trigger="plateau",
                                                monitor="score", patience=1), stop])
    assert history.history["unfreeze_stage"] == [0, 0, 1, 1, 1, 1]
    assert stop.stopped_epoch == 5


@pytest.mark.parametrize("best_scope, epochs_run", [("stage", 6), ("run", 4)])
def test_best_scope_run_makes_the_last_stage_beat_the_best_of_the_whole_run(best_scope,
                                                                               epochs_run):
    # Stage 0's best is 0.5; the last stage (from epoch 2) improves on itself, never on 0.5.
    unfreeze = ProgressiveUnfreeze(["none", "all"], trigger="plateau", monitor="score",
                                   patience=1, best_scope=best_scope)
    stop = StageEarlyStopping(monitor="score", mode="min", patience=2)
    history = fit_scripted([0.5, 0.9, 0.8, 0.7, 0.6, 0.55], [unfreeze, stop])
    assert len(history.history["loss"]) == epochs_run
    assert history.history["unfreeze_stage"][2:] == [1] * (epochs_run - 2)


@pytest.mark.parametrize("bad, mode", [(math.nan, "min"), (-math.inf, "min"), (math.inf, "max")])
def test_a_non_finite_value_is_never_an_improvement(bad, mode):
    sign = 1.0 if mode == "min" else -1.0
    scores = [bad, sign * 1.0, sign * 0.9, sign * 0.8, sign * 0.7]
    # One stage: stopping is EarlyStopping's from epoch 0. Plain EarlyStopping takes -inf (in
    # mode "min") as a best nothing beats and stops at epoch 2; a bad value is skipped here.
    stop = StageEarlyStopping(monitor="score", mode=mode, patience=2, check_finite=False)
    history = fit_scripted(scores, [ProgressiveUnfreeze({0: "all"}), stop])
    assert len(history.history["loss"]) == 5
    assert stop.stopped_epoch == 0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_value_stops_training_at_once_in_any_stage(bad):
    # Stage 0 until epoch 3: the schedule is far from its last stage when the metric diverges.
    stop = StageEarlyStopping(monitor="score", mode="min", patience=2)
    with pytest.warns(UserWarning) as caught:
        history = fit_scripted([4.0, 3.0, bad, 2.0, 1.0],
                               [ProgressiveUnfreeze({0: "none", 3: "all"}), stop])
    assert len(history.history["loss"]) == 3
    assert stop.stopped_epoch == 2 and history.history["unfreeze_stage"] == [0, 0, 0]
    message = " ".join(str(w.message) for w in caught)
    assert f"stopped training at epoch 3: score is {bad} (not finite), in stage 1 of 2" in message
    assert "lower the learning rate" in message and "check_finite=False" in message
    assert f"Received: score={bad}" in message


def test_a_non_finite_value_in_the_last_stage_names_the_best_so_far():
    stop = StageEarlyStopping(monitor="score", mode="min", patience=2)
    with pytest.warns(UserWarning, match=r"epoch 3: score is -inf .*in stage 1 of 1 \(the best "
                                         r"in scope so far: 3\)"):
        history = fit_scripted([4.0, 3.0, -math.inf, 2.0], [ProgressiveUnfreeze({0: "all"}), stop])
    assert len(history.history["loss"]) == 3


def test_check_finite_false_trains_on_through_a_nan():
    stop = StageEarlyStopping(monitor="score", mode="min", patience=2, check_finite=False)
    history = fit_scripted([4.0, 3.0, math.nan, 2.0, 1.0],
                           [ProgressiveUnfreeze({0: "none", 3: "all"}), stop])
    assert len(history.history["loss"]) == 5


def test_plain_early_stopping_takes_a_first_minus_inf_as_a_best_nothing_beats():
    # What the test above guards against (a Keras canary: when this fails, Keras changed).
    stop = keras.callbacks.EarlyStopping(monitor="score", mode="min", patience=2)
    history = fit_scripted([-math.inf, 1.0, 0.9, 0.8, 0.7], [ProgressiveUnfreeze({0: "all"}), stop])
    assert len(history.history["loss"]) == 3


def test_without_a_progressive_unfreeze_in_the_fit_it_says_what_to_use():
    with pytest.raises(ValueError, match="this fit has none.*keras.callbacks.EarlyStopping"):
        fit_scripted([1.0, 1.0], [StageEarlyStopping(monitor="score", mode="min")])


def test_a_progressive_unfreeze_of_an_earlier_fit_does_not_count():
    model = nested_model()
    fit_scripted([1.0], [plateau()], model=model)
    with pytest.raises(ValueError, match="only a ProgressiveUnfreeze from an earlier fit"):
        fit_scripted([1.0], [StageEarlyStopping(monitor="score", mode="min")], model=model,
                     compile_model=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patience": -1}, "Invalid patience: expected an integer >= 0. Received: patience=-1"),
        ({"min_delta": math.nan}, "Received: min_delta=nan"),
        ({"mode": "up"}, "mode must be one of ('auto', 'min', 'max'). Received: mode='up'"),
        ({"verbose": 2}, "verbose must be 0 or 1. Received: verbose=2"),
        ({"baseline": math.inf}, "Received: baseline=inf"),
        ({"restore_best_weights": "yes"}, "Received: restore_best_weights='yes'"),
        ({"start_from_epoch": 1.5}, "Received: start_from_epoch=1.5"),
        ({"monitor": ""}, "monitor must be a metric name. Received: monitor=''"),
        ({"check_finite": 1}, "check_finite must be True or False. Received: check_finite=1"),
    ],
)
def test_invalid_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError) as info:
        StageEarlyStopping(**kwargs)
    assert message in str(info.value)

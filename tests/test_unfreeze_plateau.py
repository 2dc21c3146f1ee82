"""ProgressiveUnfreeze's plateau stages: the most epochs a stage runs, the best kept per stage or
across the run, and non-finite values of the metric (runs on every backend: test_backends)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.scripted import Scripted, fit_scripted  # noqa: E402
from helpers_unfreeze.tiny import values  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402


class Kept(keras.callbacks.Callback):
    """The head's weights after every other callback's on_epoch_end (listed last)."""

    def __init__(self):
        super().__init__()
        self.kept = {}

    def on_epoch_end(self, epoch, logs=None):
        self.kept[epoch] = values(self.model.get_layer("head").weights)


def plateau(**options):
    return ProgressiveUnfreeze(["none", 1, "all"], trigger="plateau", monitor="score",
                               mode="min", **options)


def test_a_stage_moves_on_at_its_maximum_epochs_or_at_the_plateau_whichever_comes_first():
    # Stage 0 stalls after epoch 1 (patience 1); stage 1 keeps improving but has run its 3
    # epochs (2, 3, 4) at epoch 5.
    history = fit_scripted([1.0, 1.1, 0.9, 0.8, 0.7, 0.6, 0.5],
                           [plateau(patience=1, max_stage_epochs=3)])
    assert history.history["unfreeze_stage"] == [0, 0, 1, 1, 1, 2, 2]


def test_best_scope_run_makes_a_stage_beat_the_best_of_the_whole_run():
    # Stage 1 improves on itself (0.8, 0.7, 0.6) but never on stage 0's best (0.5).
    scores = [1.0, 0.5, 0.9, 0.9, 0.8, 0.7, 0.6]
    per_stage = fit_scripted(scores, [plateau(patience=2)])
    whole_run = fit_scripted(scores, [plateau(patience=2, best_scope="run")])
    assert per_stage.history["unfreeze_stage"] == [0, 0, 0, 0, 1, 1, 1]
    assert whole_run.history["unfreeze_stage"] == [0, 0, 0, 0, 1, 1, 2]


def test_best_scope_run_restores_the_best_weights_of_the_whole_run():
    # Epoch 0 is the run's best; epochs 1 and 2 stall (patience 1): the weights of epoch 0
    # come back at both stage changes, the second one in a stage that never reached them.
    scripted, kept = Scripted([0.5, 0.9, 0.8, 0.7]), Kept()
    history = fit_scripted(scripted, [plateau(patience=1, best_scope="run",
                                              restore_best_weights=True), kept])
    assert history.history["unfreeze_stage"] == [0, 0, 1, 2]
    for epoch in (1, 2):
        for key, value in scripted.trained[0].items():
            assert not np.array_equal(scripted.trained[epoch][key], value)
            np.testing.assert_array_equal(kept.kept[epoch][key], value)


@pytest.mark.parametrize("bad, mode", [(math.nan, "min"), (-math.inf, "min"), (math.inf, "max")])
def test_a_non_finite_value_is_never_an_improvement_at_a_stages_first_epoch_too(bad, mode):
    sign = 1.0 if mode == "min" else -1.0
    # A bad first value must not become the best (nothing would beat -inf in mode "min"), nor a
    # bad value later: epochs 2 and 3 are two epochs without improvement (patience 2).
    scores = [bad, sign * 1.0, bad, bad, sign * 0.5]
    cb = ProgressiveUnfreeze(["none", 1, "all"], trigger="plateau", monitor="score", mode=mode,
                             patience=2)
    history = fit_scripted(scores, [cb])
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0, 1]


def test_the_maximum_epochs_of_a_stage_count_on_in_a_resumed_run(tmp_path):
    scores = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise RuntimeError("interrupted")

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        fit_scripted(scores, [plateau(max_stage_epochs=2),
                              keras.callbacks.BackupAndRestore(backup), Interrupt()])
    # A new process: a new model and callback, the stage records from the backup.
    history = fit_scripted(scores, [plateau(max_stage_epochs=2),
                                    keras.callbacks.BackupAndRestore(backup)])
    # Stage 1 began at epoch 2, before the interruption: it runs epochs 2-3, stage 2 from 4.
    assert history.history["unfreeze_stage"] == [1, 2, 2]

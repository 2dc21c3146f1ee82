"""StageEarlyStopping: early stopping that waits for a ProgressiveUnfreeze schedule's last stage.

Plain ``keras.callbacks.EarlyStopping`` next to a plateau schedule ends the run at the first
plateau, in stage 0 or 1, where the schedule meant to unfreeze more. This callback follows
finetuning-scheduler's ``FTSEarlyStopping``: before the last stage a plateau is the schedule's
business (it begins the next stage); from the last stage's first epoch on, it is early stopping.
"""

from __future__ import annotations

import math
import warnings

import keras

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks.unfreeze import ProgressiveUnfreeze
from keras_tlft.checks import check_number
from keras_tlft.schedules.schedule import MODES

__all__ = ["StageEarlyStopping"]


class StageEarlyStopping(keras.callbacks.EarlyStopping):
    """Stop training when a monitored metric has stopped improving in the schedule's last stage.

    Used next to a `ProgressiveUnfreeze` in the same `fit` (in any order), it never stops
    training before the schedule's last stage has begun: before that, a plateau is for the
    schedule to act on (a plateau schedule begins the next stage). From the last stage's first
    epoch on it is `keras.callbacks.EarlyStopping`, its wait counted from that epoch, so the
    last stage always runs at least `patience` epochs.

    Its best value is kept in the schedule's `best_scope`: with `"stage"` (the default) the
    last stage starts afresh and must only improve on itself; with `"run"` (finetuning-
    scheduler's semantics) the best is kept from the first epoch of the `fit` on, so the last
    stage must beat the best of every stage before it, and `restore_best_weights` restores the
    best weights of the whole run. A non-finite value of the metric (NaN, +inf, -inf) stops
    training at once, in any stage, with a warning (finetuning-scheduler's `check_finite`: a
    diverged run does not recover by training on); with `check_finite=False` it only never
    counts as an improvement. Like `EarlyStopping`, its counters live in the callback: a run
    restarted by `BackupAndRestore` counts its wait afresh from the epoch it resumes at.

    A `fit` without a `ProgressiveUnfreeze` is a `ValueError` at its start, as is a
    `ProgressiveUnfreeze` left from an earlier `fit` but not in this one: without stages there
    is nothing to wait for, and plain `keras.callbacks.EarlyStopping` is the callback to use.

    Args:
        monitor: the metric to watch. Defaults to `"val_loss"`.
        min_delta: the smallest change that counts as an improvement. Defaults to `0`.
        patience: epochs without improvement, in the last stage, before training stops.
            Defaults to `0`.
        verbose: 0 is silent, 1 prints a line when the callback stops training or restores
            weights. Defaults to `0`.
        mode: `"min"`, `"max"` or `"auto"` (from the direction of the compiled metric, as in
            `EarlyStopping`). Defaults to `"auto"`.
        baseline: the value the metric must beat for the wait to restart. Defaults to `None`.
        restore_best_weights: at the end of training, restore the weights of the best epoch
            (of the last stage, or of the run with `best_scope="run"`). Defaults to `False`.
        start_from_epoch: epochs to wait before watching the metric for a plateau (a
            non-finite value stops training even before). Defaults to `0`.
        check_finite: stop training when the metric is NaN or infinite, whatever the stage.
            Defaults to `True`.

    Example:

    ```python
    model.fit(train, validation_data=val, epochs=50, callbacks=[
        keras_tlft.ProgressiveUnfreeze("plateau:patience=2,max_stage_epochs=10"),
        # Stops only once the whole backbone trains and val_loss stalls for 3 epochs.
        keras_tlft.StageEarlyStopping(monitor="val_loss", patience=3,
                                      restore_best_weights=True),
    ])
    ```
    """

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0,
                 check_finite=True):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name. Received: monitor={monitor!r}")
        check_number("min_delta", min_delta, allow_low=True)
        check_number("patience", patience, allow_low=True, integer=True)
        check_number("start_from_epoch", start_from_epoch, allow_low=True, integer=True)
        if isinstance(verbose, bool) or verbose not in (0, 1):
            raise ValueError(f"verbose must be 0 or 1. Received: verbose={verbose!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}. Received: mode={mode!r}")
        if baseline is not None:
            check_number("baseline", baseline, low=-math.inf)
        if not isinstance(restore_best_weights, bool):
            raise ValueError("restore_best_weights must be True or False. "
                             f"Received: restore_best_weights={restore_best_weights!r}")
        if not isinstance(check_finite, bool):
            raise ValueError("check_finite must be True or False. "
                             f"Received: check_finite={check_finite!r}")
        self.check_finite = check_finite
        super().__init__(monitor=monitor, min_delta=min_delta, patience=patience,
                         verbose=verbose, mode=mode, baseline=baseline,
                         restore_best_weights=restore_best_weights,
                         start_from_epoch=start_from_epoch)
        self.unfreeze: ProgressiveUnfreeze | None = None
        self._in_last_stage = False

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.unfreeze = ProgressiveUnfreeze.of(self.model)
        if self.unfreeze is None:
            raise ValueError(
                "StageEarlyStopping waits for the last stage of a ProgressiveUnfreeze schedule, "
                "and this fit has none. Expected a ProgressiveUnfreeze in the same fit's "
                "callbacks (in any order); without stages, use keras.callbacks.EarlyStopping. "
                f"Received: model {self.model.name!r} with no ProgressiveUnfreeze"
            )
        self._in_last_stage = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self.unfreeze.fitting:  # every on_train_begin has run: the one of this fit has
            raise ValueError(
                "StageEarlyStopping found only a ProgressiveUnfreeze from an earlier fit of "
                f"this model, not one in this fit. Expected a ProgressiveUnfreeze in the same "
                f"fit's callbacks. Received: schedule {self.unfreeze.schedule.to_json()} of a "
                "finished fit"
            )

    def on_epoch_end(self, epoch, logs=None):
        current = self.get_monitor_value(logs)
        if current is None:
            return
        current = float(current)
        if self.check_finite and not math.isfinite(current):
            self._stop_on_non_finite(epoch, current)
            return
        if epoch < self.start_from_epoch:
            return
        unfreeze = self.unfreeze
        in_last_stage = unfreeze.stage == len(unfreeze.stages) - 1
        run_scope = unfreeze.schedule.best_scope == "run"
        if in_last_stage and not self._in_last_stage:  # the last stage's first epoch
            self._in_last_stage = True
            self.wait = 0
            if not run_scope:
                self.best, self.best_weights = None, None
        if not (in_last_stage or run_scope):
            return
        if self.restore_best_weights and self.best_weights is None:
            # As EarlyStopping: until some epoch improves, the first one's weights are the best.
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch
        self.wait += 1
        if self._improves(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._improves(current, self.baseline):
                self.wait = 0
            return
        if in_last_stage and self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def _stop_on_non_finite(self, epoch: int, value: float) -> None:
        self.stopped_epoch = epoch
        self.model.stop_training = True
        unfreeze = self.unfreeze
        known = self.best is not None and math.isfinite(self.best)
        best = f" (the best in scope so far: {self.best:g})" if known else ""
        warnings.warn(
            f"StageEarlyStopping stopped training at epoch {epoch + 1}: {self.monitor} is "
            f"{value} (not finite), in stage {unfreeze.stage + 1} of {len(unfreeze.stages)}"
            f"{best}. A diverged run does not recover by training on: "
            "lower the learning rate (or backbone_lr_ratio, or add warmup_steps), or pass "
            f"check_finite=False to go on. Received: {self.monitor}={value}",
            stacklevel=2,
        )

    def _improves(self, value: float, reference) -> bool:
        """Whether ``value`` improves on ``reference`` (``None``: nothing yet) by more than
        ``min_delta``; a non-finite value never does."""
        if not math.isfinite(value):
            return False
        if reference is None:
            return True
        sign = -1.0 if compat.monitor_mode(self) == "min" else 1.0
        return sign * (value - float(reference)) > abs(self.min_delta)

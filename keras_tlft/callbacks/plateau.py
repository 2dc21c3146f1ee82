"""The plateau trigger of :class:`~keras_tlft.ProgressiveUnfreeze`: the next stage begins when
the monitored metric has not improved for ``patience`` epochs, or when a stage has run its
``max_stage_epochs``.

Its counters (the best value, the wait, the epoch each stage began) live in the stage records of
:mod:`keras_tlft.staging`, in the optimizer, so that a restarted run resumes them; what lives here
is the state of one ``fit`` only (the epoch running, the best weights kept in memory).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from keras_tlft.callbacks.stage_records import NO_BEST
from keras_tlft.callbacks.staging import Stager
from keras_tlft.schedules.schedule import Schedule

__all__ = ["PlateauTrigger"]


class PlateauTrigger:
    """The plateau decisions of one ``fit`` (``ProgressiveUnfreeze.on_train_begin`` creates it).

    Args:
        schedule: the callback's schedule, with ``trigger="plateau"``.
        stager: the stage mechanics of the model being trained (records and the stage index).
        model: the model, whose weights ``restore_best_weights`` keeps and restores.
    """

    def __init__(self, schedule: Schedule, stager: Stager, model):
        self.schedule, self.stager, self.model = schedule, stager, model
        self.epoch = 0
        self.in_epoch = False
        self.best_weights: list | None = None
        self.monitor_seen = False
        self.warned_monitor = False

    def stage_at(self, epoch: int) -> int:
        """The stage in force at ``epoch``, which begins: the last one the records began by
        then, or the next one when that has run its ``max_stage_epochs``."""
        self.in_epoch, self.epoch = True, epoch
        target = self.stager.records.begun_by(epoch, len(self.stager.stages))
        if self._stage_ran_out(target, epoch):
            self._advance(target + 1, epoch)
            target += 1
        return target

    def test_ended(self, logs) -> None:
        """A validation inside an epoch ended: a ``val_`` metric's value is known before any
        callback's ``on_epoch_end``, so a decision taken now is in the optimizer's state when
        ``BackupAndRestore`` saves it, whatever the order of the callbacks."""
        monitor = self.schedule.monitor
        if self.in_epoch and logs and monitor.startswith("val_") and monitor[4:] in logs:
            self._observe(float(logs[monitor[4:]]))

    def epoch_ended(self, epoch: int, logs: dict) -> None:
        """The epoch ended with ``logs``: a training metric is observed now, and a monitor
        missing from the logs is warned about once."""
        self.in_epoch = False
        monitor = self.schedule.monitor
        if not monitor.startswith("val_") and monitor in logs:
            self._observe(float(logs[monitor]))
        if monitor in logs:
            self.monitor_seen = True
        elif not self.monitor_seen and not self.warned_monitor and epoch > 0:
            self.warned_monitor = True
            warnings.warn(
                f"ProgressiveUnfreeze's plateau schedule watches {monitor!r}, which is not "
                f"in the logs (available: {', '.join(sorted(logs)) or 'none'}): the next "
                f"stage will not begin. Pass validation_data to fit, or monitor= one of "
                f"the available metrics.",
                stacklevel=3,
            )

    def _observe(self, value: float) -> None:
        """One epoch's value of the monitored metric."""
        stager, schedule = self.stager, self.schedule
        value = float(np.float32(value))
        best, wait = stager.records.plateau_state()
        sign = -1.0 if schedule.resolved_mode() == "min" else 1.0
        # Before a first value in scope (wait < 0, or an older record's NaN), the best is the
        # worst value, which every finite value beats. Infinite values are stored (JAX's
        # multi-process check of assigned host values finds NaN unequal to itself, not inf).
        if wait < 0 or math.isnan(best):
            best, wait = -sign * math.inf, 0.0
        # A non-finite value (NaN, +inf or -inf) is never an improvement, at a stage's first
        # epoch too: -inf in mode "min" would otherwise become a best nothing can beat.
        if math.isfinite(value) and sign * (value - best) > schedule.min_delta:
            best, wait = value, 0.0
            if schedule.restore_best_weights:
                self.best_weights = self.model.get_weights()
        else:
            wait += 1
        stager.records.set_plateau(best, wait)
        if wait >= schedule.patience and stager.index + 1 < len(stager.stages):
            self._advance(stager.index + 1, self.epoch + 1)

    def _stage_ran_out(self, index: int, epoch: int) -> bool:
        """Whether stage ``index`` has run its ``max_stage_epochs`` by ``epoch`` (and a stage
        follows it). Read from the stage records, so a resumed run agrees."""
        limit = self.schedule.max_stage_epochs
        if limit is None or index + 1 >= len(self.stager.stages):
            return False
        began = self.stager.records.read()[0][1 + index]
        return began >= 0 and epoch - began >= limit

    def _advance(self, index: int, epoch: int) -> None:
        """Stage ``index`` begins at ``epoch``: the best weights (of the stage or of the run:
        ``best_scope``) come back first, and the wait restarts."""
        schedule, records = self.schedule, self.stager.records
        if schedule.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif schedule.restore_best_weights:
            warnings.warn(
                "ProgressiveUnfreeze could not restore the best weights: they were kept in "
                "memory by a process that has since been restarted. The next stage starts "
                "from the current weights.",
                stacklevel=4,
            )
        records.schedule_next(index, epoch)
        best, wait = records.plateau_state()
        if schedule.best_scope == "run" and wait >= 0:
            records.set_plateau(best, 0.0)  # the run's best is kept; the wait restarts
        else:
            self.best_weights = None
            records.set_plateau(*NO_BEST)

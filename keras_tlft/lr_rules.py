"""The learning rate one group of variables trains at: :class:`LearningRateRule`.

Plain data with two evaluations: :meth:`LearningRateRule.value` in Python (for plans and
records) and :meth:`LearningRateRule.tensor` as backend ops, which
:class:`~keras_tlft.optim.StagedOptimizer` applies in the compiled train step. Importable as
``keras_tlft.optim.LearningRateRule`` too.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LearningRateRule"]


@dataclass(frozen=True)
class LearningRateRule:
    """The learning rate one group of variables trains at.

    ``absolute`` (when set) replaces the optimizer's learning rate by a constant; otherwise the
    optimizer's learning rate (a float or a schedule, evaluated at each step) is multiplied by
    ``scale``. With ``warmup_steps``, the result ramps linearly from ``1/warmup_steps`` of itself
    at iteration ``warmup_start`` to all of it ``warmup_steps`` iterations later.
    """

    scale: float = 1.0
    absolute: float | None = None
    warmup_start: int | None = None
    warmup_steps: int = 0

    @property
    def is_identity(self) -> bool:
        return self.absolute is None and self.scale == 1.0 and not self._ramps

    @property
    def _ramps(self) -> bool:
        return bool(self.warmup_steps) and self.warmup_start is not None

    def ramp(self, iteration: int) -> float:
        """The warm-up factor at ``iteration`` (plain Python)."""
        if not self._ramps:
            return 1.0
        return min(1.0, max(0.0, (iteration - self.warmup_start + 1) / self.warmup_steps))

    def value(self, learning_rate: float, iteration: int) -> float:
        """The learning rate in force at ``iteration`` when the optimizer's is ``learning_rate``."""
        base = self.absolute if self.absolute is not None else learning_rate * self.scale
        return base * self.ramp(iteration)

    def tensor(self, learning_rate, iteration):
        """:meth:`value` as backend ops, for the compiled train step."""
        from keras import ops

        if self.absolute is not None:
            lr = ops.cast(self.absolute, "float32")
        elif self.scale != 1.0:
            lr = ops.multiply(ops.cast(learning_rate, "float32"), self.scale)
        else:
            lr = learning_rate
        if self._ramps:
            steps_done = ops.cast(iteration, "float32") - float(self.warmup_start) + 1.0
            lr = lr * ops.clip(steps_done / float(self.warmup_steps), 0.0, 1.0)
        return lr

"""The learning rate one group of variables trains at: :class:`LearningRateRule`, and the
shape it may follow within a stage (:class:`SlantedTriangle`, ULMFiT's slanted triangular
learning rates).

Plain data with two evaluations: :meth:`LearningRateRule.value` in Python (for plans and
records) and :meth:`LearningRateRule.tensor` as backend ops, which
:class:`~keras_tlft.optim.StagedOptimizer` applies in the compiled train step. Importable as
``keras_tlft.optim.LearningRateRule`` too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from keras_tlft.checks import check_choice

__all__ = ["LR_SHAPES", "LearningRateRule", "SlantedTriangle", "check_lr_shape"]

# The shapes a stage's learning rates can follow (Schedule.stage_lr_shape).
LR_SHAPES = ("constant", "slanted_triangular")


def check_lr_shape(shape, cut_frac, ratio) -> None:
    """Raise ``ValueError`` unless ``shape`` is one of :data:`LR_SHAPES`, ``cut_frac`` is in
    (0, 1) and ``ratio`` a finite number >= 1 (the Schedule fields of that name)."""
    check_choice("stage_lr_shape", shape, LR_SHAPES)
    if isinstance(cut_frac, bool) or not isinstance(cut_frac, (int, float)) \
            or not 0 < cut_frac < 1:
        raise ValueError("Invalid cut_frac: expected a number in (0, 1), the fraction of a "
                         f"stage's steps over which its learning rates rise. "
                         f"Received: cut_frac={cut_frac!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) \
            or not math.isfinite(ratio) or ratio < 1:
        raise ValueError("Invalid ratio: expected a finite number >= 1, how many times smaller "
                         f"a stage's lowest learning rate is than its peak. "
                         f"Received: ratio={ratio!r}")


@dataclass(frozen=True)
class SlantedTriangle:
    """ULMFiT's slanted triangular learning rates over one stage (Howard & Ruder 2018, eq. 3).

    Over the stage's ``steps`` optimizer iterations from iteration ``start``, the factor rises
    linearly from ``1/ratio`` to 1 during the first ``cut = floor(steps * cut_frac)`` of them,
    then falls linearly back to ``1/ratio`` at the stage's end, and stays there if the stage
    runs longer. With ``t = iteration - start``::

        p = t / cut                      if t < cut
            1 - (t - cut) / (steps - cut)  otherwise (clipped at 0)
        factor = (1 + p * (ratio - 1)) / ratio

    which is the paper's formula (its ``cut * (1 / cut_frac - 1)`` is ``steps - cut`` when
    ``steps * cut_frac`` is a whole number). A stage shorter than ``1 / cut_frac`` steps has
    no rise: it starts at the peak.
    """

    start: int
    steps: int
    cut_frac: float = 0.1
    ratio: float = 32.0

    @property
    def cut(self) -> int:
        return math.floor(self.steps * self.cut_frac + 1e-9)  # 0.29 * 100 is 28.99...

    def factor(self, iteration: int) -> float:
        """The multiplier of the peak learning rate at ``iteration`` (plain Python)."""
        t = iteration - self.start
        down = 1.0 - (t - self.cut) / max(1, self.steps - self.cut)
        p = min(t / self.cut, down) if self.cut else down
        p = min(1.0, max(0.0, p))
        return (1.0 + p * (self.ratio - 1.0)) / self.ratio

    def tensor(self, iteration):
        """:meth:`factor` as backend ops."""
        from keras import ops

        t = ops.cast(iteration, "float32") - float(self.start)
        p = 1.0 - (t - float(self.cut)) / float(max(1, self.steps - self.cut))
        if self.cut:
            p = ops.minimum(t / float(self.cut), p)
        p = ops.clip(p, 0.0, 1.0)
        return (1.0 + p * (self.ratio - 1.0)) / self.ratio


@dataclass(frozen=True)
class LearningRateRule:
    """The learning rate one group of variables trains at.

    ``absolute`` (when set) replaces the optimizer's learning rate by a constant; otherwise the
    optimizer's learning rate (a float or a schedule, evaluated at each step) is multiplied by
    ``scale``. With ``warmup_steps``, the result ramps linearly from ``1/warmup_steps`` of itself
    at iteration ``warmup_start`` to all of it ``warmup_steps`` iterations later. With
    ``shape`` (a :class:`SlantedTriangle`), it is also multiplied by the shape's factor.
    """

    scale: float = 1.0
    absolute: float | None = None
    warmup_start: int | None = None
    warmup_steps: int = 0
    shape: SlantedTriangle | None = None

    @property
    def is_identity(self) -> bool:
        return (self.absolute is None and self.scale == 1.0 and not self._ramps
                and self.shape is None)

    @property
    def _ramps(self) -> bool:
        return bool(self.warmup_steps) and self.warmup_start is not None

    def ramp(self, iteration: int) -> float:
        """The warm-up factor at ``iteration`` (plain Python)."""
        if not self._ramps:
            return 1.0
        return min(1.0, max(0.0, (iteration - self.warmup_start + 1) / self.warmup_steps))

    def peak(self, learning_rate: float) -> float:
        """The learning rate after any warm-up, at the top of any shape, when the optimizer's
        is ``learning_rate``."""
        return self.absolute if self.absolute is not None else learning_rate * self.scale

    def value(self, learning_rate: float, iteration: int) -> float:
        """The learning rate in force at ``iteration`` when the optimizer's is ``learning_rate``."""
        base = self.peak(learning_rate)
        shape = 1.0 if self.shape is None else self.shape.factor(iteration)
        return base * self.ramp(iteration) * shape

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
        if self.shape is not None:
            lr = lr * self.shape.tensor(iteration)
        return lr

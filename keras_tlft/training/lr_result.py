"""What a learning-rate range test yields: :class:`RangeTest` (one stage's curve and
suggestions), :class:`LRFinderResult` (every stage's, with its JSON form and plot), and the maths
behind the suggestions (:func:`smooth_losses`, :func:`suggest`). No Keras here: the test itself
runs in :mod:`keras_tlft.lr_finder`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from keras_tlft._files import atomic_write

__all__ = ["LRFinderResult", "RangeTest", "smooth_losses", "suggest"]


@dataclass
class RangeTest:
    """One range test: what trained, the learning rates tried and the losses they gave.

    ``losses`` are the training losses of each step (the loss of the step's batch before its
    update), ``smoothed`` their debiased moving average. ``steepest`` is the learning rate where
    the smoothed loss falls fastest (per unit of log learning rate), ``minimum_tenth`` a tenth of
    the learning rate of the lowest smoothed loss (both ``None`` when too few steps ran).
    ``diverged`` says the test stopped early because the loss blew up.
    """

    name: str
    stage: int | None
    unfreeze: str | None
    blocks: list[str]
    trainable_params: int
    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False
    steepest: float | None = None
    minimum_tenth: float | None = None

    @property
    def suggestion(self) -> float | None:
        """The suggested learning rate: the minimum's divided by 10 (the steepest descent's when
        there is no minimum). ``benchmarks/lr_finder_decade.py`` measured both against a grid
        search: minimum / 10 landed within a factor sqrt(10) of the best grid learning rate for
        3 seeds of 3, the steepest descent (noisy on a small data set) for 1 of 3."""
        return self.minimum_tenth if self.minimum_tenth is not None else self.steepest


@dataclass
class LRFinderResult:
    """Every range test of one :func:`lr_find` call, JSON-able through :meth:`to_json`."""

    tests: list[RangeTest]
    start_lr: float
    end_lr: float
    steps: int
    beta: float
    diverge: float
    batch_size: int | None

    @property
    def suggestions(self) -> dict[str, float | None]:
        """``{test name: suggested learning rate}``, e.g. ``{"head": 3e-3, "stage 1": 2e-4}``."""
        return {t.name: t.suggestion for t in self.tests}

    def to_json(self) -> dict:
        """The result as plain JSON-able values (non-finite losses as ``None``)."""
        data = asdict(self)
        for test, row in zip(self.tests, data["tests"]):
            row["suggestion"] = test.suggestion
            for key in ("losses", "smoothed"):
                row[key] = [x if math.isfinite(x) else None for x in row[key]]
        data["suggestions"] = self.suggestions
        return data

    def plot(self, path: str | os.PathLike) -> str:
        """Write the smoothed loss against the learning rate (log scale) as a PNG, one curve per
        test with its suggestions marked; the file is written atomically. Needs matplotlib
        (``pip install 'keras-tlft[benchmarks]'``). Returns the path."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ModuleNotFoundError(
                "LRFinderResult.plot needs matplotlib: pip install 'keras-tlft[benchmarks]' "
                "(or matplotlib). Received: matplotlib not installed"
            ) from None
        path = os.fspath(path)
        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.add_subplot()
        for test in self.tests:
            line = ax.plot(test.learning_rates, test.smoothed, label=test.name)[0]
            for lr, marker in ((test.steepest, "o"), (test.minimum_tenth, "v")):
                if lr is not None:
                    i = int(np.argmin(np.abs(np.log(test.learning_rates) - math.log(lr))))
                    ax.plot([lr], [test.smoothed[i]], marker, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        ax.set_title("learning-rate range test (o: steepest descent, v: minimum / 10)")
        low, high = _view(self.tests)
        if low is not None:
            ax.set_ylim(low - 0.1 * (high - low or abs(low) or 1), high + 0.1 * (high - low or 1))
        ax.legend()
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110)
        return path


def _view(tests) -> tuple[float | None, float | None]:
    """The loss range worth seeing: from the lowest smoothed loss to the highest one before it
    (the blow-up after the minimum would flatten the curves)."""
    lows, highs = [], []
    for t in tests:
        finite = np.asarray([x if math.isfinite(x) else np.inf for x in t.smoothed])
        if len(finite) and np.isfinite(finite.min()):
            best = int(np.argmin(finite))
            lows.append(float(finite[best]))
            highs.append(float(finite[: best + 1].max()))
    return (min(lows), max(highs)) if lows else (None, None)


# ---------------------------------------------------------------------- the maths


def smooth_losses(losses: Sequence[float], beta: float = 0.98) -> list[float]:
    """fastai's smoothed loss: ``avg = beta * avg + (1 - beta) * loss``, debiased by
    ``1 - beta ** step``."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * float(loss)
        out.append(avg / (1 - beta**i))
    return out


def suggest(learning_rates: Sequence[float], smoothed: Sequence[float],
            steps: int | None = None) -> tuple[float | None, float | None]:
    """``(steepest, minimum_tenth)`` as fastai computes them: the first tenth of the planned
    ``steps`` and the last 5 recorded steps are left out (the start is noise, the end the
    blow-up), and the curve is cut at its first non-finite loss."""
    lrs = np.asarray(learning_rates, dtype=float)
    losses = np.asarray(smoothed, dtype=float)
    steps = len(lrs) if steps is None else steps
    window = slice(steps // 10, len(lrs) - 5)
    if len(lrs[window]) >= 2:
        lrs, losses = lrs[window], losses[window]
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        lrs, losses = lrs[: bad[0]], losses[: bad[0]]
    if len(lrs) < 2:
        return None, None
    slopes = np.diff(losses) / np.diff(np.log(lrs))
    return float(lrs[int(np.argmin(slopes))]), float(lrs[int(np.argmin(losses))] / 10)

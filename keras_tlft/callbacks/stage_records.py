"""What a run has done so far, kept in optimizer variables: each stage's first epoch and
iteration, the schedule's fingerprint and a plateau schedule's counters, so that
``BackupAndRestore`` and checkpoints restore them and a restarted run resumes in the same stage,
with the same warm-up and the same plateau counters."""

from __future__ import annotations

import keras
import numpy as np

from keras_tlft.callbacks.optim import StagedOptimizer
from keras_tlft.schedules.schedule import MAX_STAGES, Schedule

# The plateau state (best, wait) before a stage's first observation. Not NaN: in a JAX
# multi-process run, a host value assigned must be equal on every process (NaN != NaN).
NO_BEST = (0.0, -1.0)

__all__ = ["NO_BEST", "StageRecords"]


class StageRecords:
    """For each stage, the epoch and the optimizer iteration it began at (``-1``: not begun),
    the schedule's fingerprint, and a plateau schedule's best value and wait: optimizer
    variables, saved and restored with the optimizer."""

    def __init__(self, staged: StagedOptimizer):
        self.staged = staged
        self.epochs = staged.state_variable("tlft_stage_epochs", (MAX_STAGES + 1,), "int32", -1)
        self.iterations = staged.state_variable("tlft_stage_iterations", (MAX_STAGES,), "int32",
                                                -1)
        self.plateau = staged.state_variable("tlft_plateau", (2,), "float32", 0.0)
        # 1 while a fit runs its epochs: saved so in a mid-epoch backup, cleared by set_model.
        self.running = staged.state_variable("tlft_running", (1,), "int32", 0)

    def read(self):
        """``(epochs, iterations)`` as numpy arrays; ``epochs[0]`` is the fingerprint."""
        epochs = keras.ops.convert_to_numpy(self.epochs).astype(int)
        iterations = keras.ops.convert_to_numpy(self.iterations).astype(int)
        return epochs, iterations

    def write(self, epochs, iterations) -> None:
        self.epochs.assign(np.asarray(epochs, dtype="int32"))
        self.iterations.assign(np.asarray(iterations, dtype="int32"))

    def iteration(self) -> int:
        """The optimizer's iteration count now."""
        return int(keras.ops.convert_to_numpy(self.staged.inner.iterations))

    def set_running(self, running: bool) -> None:
        self.running.assign(np.array([int(running)], dtype="int32"))

    def reconcile(self, epoch: int, schedule: Schedule) -> None:
        """On the first epoch of a ``fit``: a run resumed at ``epoch`` keeps the records of the
        stages begun up to it; a new run (epoch 0, or another schedule) starts afresh.

        At epoch 0, a run is resumed only when ``BackupAndRestore`` loaded a mid-epoch backup
        (``save_freq=N``) after :meth:`set_running` cleared the flag: its stage 0 keeps the
        iteration it began at, so its warm-up goes on rather than starting over."""
        epochs, iterations = self.read()
        fingerprint = schedule.fingerprint()
        restored = int(keras.ops.convert_to_numpy(self.running)[0]) == 1
        self.set_running(True)
        if (epoch == 0 and not restored) or epochs[0] != fingerprint:
            epochs[:] = -1
            iterations[:] = -1
            epochs[0] = fingerprint
            self.set_plateau(*NO_BEST)
        later = epochs[1:] > epoch
        epochs[1:][later] = -1
        iterations[later] = -1
        if schedule.trigger == "plateau" and epochs[1] == -1:
            epochs[1] = epoch
        self.write(epochs, iterations)

    def begun_by(self, epoch: int, n_stages: int) -> int:
        """The last stage (of a plateau schedule) begun at or before ``epoch``."""
        epochs, _ = self.read()
        begun = [i for i in range(n_stages) if 0 <= epochs[1 + i] <= epoch]
        return max(begun) if begun else 0

    def begin(self, index: int, epoch: int) -> bool:
        """Record that stage ``index`` begins now, unless it had begun; whether it is new."""
        epochs, iterations = self.read()
        if iterations[index] >= 0:
            return False
        epochs[1 + index] = epoch
        iterations[index] = self.iteration()
        self.write(epochs, iterations)
        return True

    def schedule_next(self, index: int, epoch: int) -> None:
        """Stage ``index`` (of a plateau schedule) begins at ``epoch``."""
        epochs, iterations = self.read()
        epochs[1 + index] = epoch
        self.write(epochs, iterations)

    def plateau_state(self) -> tuple[float, float]:
        """``(best, wait)`` of the monitored metric: the best of the current stage (or of the
        run, with ``best_scope="run"``) and the epochs since the stage's last improvement;
        ``wait < 0`` before any value in scope."""
        best, wait = (float(x) for x in keras.ops.convert_to_numpy(self.plateau))
        return best, wait

    def set_plateau(self, best: float, wait: float) -> None:
        self.plateau.assign(np.array([best, wait], dtype="float32"))

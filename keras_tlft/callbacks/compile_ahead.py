"""The next stage's train step made ready while the current stage trains (JAX, TensorFlow).

A stage change retraces Keras's train step for the new ``trainable`` flags, and the backend then
prepares the new step at its first call: on a 2-core CPU, for MobileNetV2 at 96x96, 7.0-7.7 s on
JAX (4.6-4.9 s of it XLA's compile, ``benchmarks/jax_stage_change.py``) and about 2.4 s on
TensorFlow (about half the trace, half TensorFlow instantiating the function: grappler's
optimisation and the kernels' creation). Both of the second parts run in C++ without the GIL, so
they can run in a thread while the steps go on. :class:`CompileAhead` does that: once a stage's
first step has run (or been dispatched), it traces the *next* stage's step in the main thread,
with that stage's trainable flags and learning-rate rules set for the moment it takes, and hands
the rest to a background thread; the stage change then installs the prepared step instead of
retracing. The trace itself stays in the main thread (the flags are global), so its cost moves
to the stage before rather than going away.

The prepared step is used only where it is the step a retrace would make: the stage the plan was
made for, with exactly the learning-rate rules the stage gets when it begins (a warm-up's first
iteration is predicted from the steps per epoch; a wrong guess, or anything else that differs,
retraces as before). Elsewhere the fit retraces: PyTorch, ``run_eagerly``,
``steps_per_execution`` above 1, a ``keras.distribution`` or a ``tf.distribute`` strategy, Flax
NNX, ``jit_compile=False`` on JAX or ``jit_compile=True`` on TensorFlow, TensorFlow with no core
to spare (:func:`spare_core`), a plateau schedule (its stage changes are not known ahead), the
stages a masked run shares one step for (:mod:`~keras_tlft.callbacks.stage_masks`).

The backends' own parts: :mod:`~keras_tlft.callbacks.compile_ahead_jax` (XLA's compile of the
lowered step) and :mod:`~keras_tlft.callbacks.compile_ahead_tf` (TensorFlow's instantiation of
the traced function, by a call that runs none of the step).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["NAMES", "CompileAhead", "compile_ahead", "spare_core", "why_not_ahead"]

NAMES = {"jax": "JAX", "tensorflow": "TensorFlow"}  # the backends it applies to


def why_not_ahead(model, schedule) -> str | None:
    """Why ``model``'s fit cannot prepare stages ahead (``None``: it can)."""
    import keras

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        return f"the {backend} backend (JAX and TensorFlow only: its steps are not traced)"
    if getattr(model, "run_eagerly", False):
        return "run_eagerly: no traced step"
    jit = getattr(model, "jit_compile", False)
    if backend == "jax" and not jit:
        return "jit_compile=False: no compiled step"
    if backend == "tensorflow" and jit:
        return "jit_compile=True on TensorFlow: XLA compiles the step at its first call"
    if backend == "tensorflow" and not spare_core():
        return ("TensorFlow computes on every CPU core: no core is spare for the background "
                "instantiation, which would slow the steps more than it saves")
    if getattr(model, "steps_per_execution", 1) != 1:
        return "steps_per_execution above 1"
    if keras.distribution.distribution() is not None:
        return "a keras.distribution"
    if backend == "tensorflow":
        import tensorflow as tf

        strategy = model.distribute_strategy
        if tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy():
            return "a tf.distribute strategy"
    is_nnx = getattr(keras.config, "is_nnx_enabled", None)
    if backend == "jax" and is_nnx is not None and is_nnx():
        return "Flax NNX"
    if schedule.trigger != "epoch":
        return "a plateau schedule: its stage changes are not known ahead"
    return None


def spare_core() -> bool:
    """Whether TensorFlow leaves a CPU core to a background thread: its steps run on a GPU, or
    it computes on fewer intra-op threads than the process has cores.

    On a 2-core CPU with TensorFlow on both cores (its default), instantiating the next stage's
    step in a thread made fits 0.90-1.18x as long over four cells, slower in two (the frozen
    steps beside it took about twice as long); with one compute thread, 0.93-1.01x
    (``benchmarks/compile_ahead.py``, ``docs/benchmarks/callback-cost.md``).
    """
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return True
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 0 < threads < (cores or 1)


def compile_ahead(stager, params, masked_from):
    """The backend's :class:`CompileAhead` for a fit (``why_not_ahead`` said it can)."""
    import keras

    if keras.backend.backend() == "jax":
        from keras_tlft.callbacks.compile_ahead_jax import JaxAhead as ahead
    else:
        from keras_tlft.callbacks.compile_ahead_tf import TensorFlowAhead as ahead
    return ahead(stager, params, masked_from)


@dataclass
class _Plan:
    """The next stage, its learning-rate rules as predicted, and one prepared step per batch
    shape (JAX) or element spec (TensorFlow)."""

    index: int
    table: dict
    futures: dict = field(default_factory=dict)  # key -> Future of the prepared step


class CompileAhead:
    """Prepares each stage's train step ahead, while the stage before it trains.

    Args:
        stager: the fit's :class:`~keras_tlft.callbacks.staging.Stager`.
        params: the callback's ``params`` (the fit's epochs and steps per epoch).
        masked_from: the first stage of a masked run's shared step (``None``: not masked).

    Subclasses give :meth:`install` (the stage's train function, from the prepared steps) and
    call :meth:`planned` to trace the plan's step.
    """

    def __init__(self, stager, params, masked_from: int | None):
        self.stager, self.model = stager, stager.model
        self.epochs = (params or {}).get("epochs") or 0
        self.steps = (params or {}).get("steps")
        self.masked_from = masked_from
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keras-tlft-compile")
        self.plan: _Plan | None = None
        self.compiled = 0  # steps prepared ahead
        self.used = 0  # stage changes that installed one (or more)
        self.missed: list[str] = []  # why a plan was not used
        self.seconds = 0.0  # spent tracing ahead in the main thread (moved, not saved)

    def enter(self, index: int, epoch: int) -> bool:
        """Stage ``index`` begins at ``epoch`` (its rules set): install its step, prepared
        ahead when the plan fits; then plan the next stage. Always ``True`` (no retrace: the
        installed step traces itself when nothing was prepared ahead)."""
        plan, futures = self.plan, {}
        if plan is not None:
            if plan.index == index and plan.table == self.stager.staged.rules:
                futures = plan.futures
                self.used += bool(futures)
            else:
                self.missed.append(f"stage {index + 1}: planned for stage {plan.index + 1} "
                                   "with other learning-rate rules" if plan.index == index else
                                   f"stage {index + 1} began, planned for {plan.index + 1}")
                for future in plan.futures.values():
                    future.cancel()
        self.install(futures)
        self.plan = self._plan(index + 1, epoch)
        return True

    def install(self, futures: dict) -> None:
        raise NotImplementedError

    def _plan(self, index: int, epoch: int) -> _Plan | None:
        """The plan for stage ``index`` (``None``: not prepared ahead), made while the model's
        variables hold their values (``on_epoch_begin``)."""
        stager = self.stager
        if index >= len(stager.stages) or (self.masked_from is not None
                                           and index >= self.masked_from):
            return None
        begins = stager.stages[index].epoch
        if begins is None or begins >= self.epochs:
            return None
        epochs, iterations = (a.copy() for a in stager.records.read())
        epochs[1 + index] = begins
        iterations[index] = (stager.records.iteration() + (begins - epoch) * self.steps
                             if self.steps else -1)
        with stager.flags_of(index):
            _, _, rules = stager.rules_of(index, epochs, iterations)
            table = stager.staged.rule_table(rules)
        return _Plan(index, table)

    @contextlib.contextmanager
    def planned(self, plan: _Plan):
        """``plan``'s stage in force for the moment of a trace (its flags and learning-rate
        rules), then the current stage's put back."""
        staged = self.stager.staged
        rules, start = staged.rules, time.perf_counter()
        try:
            with self.stager.flags_of(plan.index):
                staged.rules = plan.table
                yield
        finally:
            staged.rules = rules
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        """Stop preparing (at the end of the fit): work not begun is dropped."""
        self.plan = None
        self.pool.shutdown(wait=False, cancel_futures=True)

"""The next stage's train step compiled while the current stage trains (JAX).

On JAX a stage change retraces Keras's train step and XLA compiles it again, in the new stage's
first step: 7.0-7.7 s for MobileNetV2 at 96x96 on a 2-core CPU, of which 4.6-4.9 s is XLA's
compile (``benchmarks/jax_stage_change.py``). XLA's compile releases the GIL, so it can run in a
thread while the steps go on. :class:`CompileAhead` does that: once a stage's first step is
dispatched, it traces and lowers the *next* stage's step (in the main thread, with that stage's
trainable flags and learning-rate rules set for the moment it takes, while the dispatched step
runs), and hands the compile to a background thread; the stage change then installs the compiled
executable instead of retracing. Each batch shape the fit has met (a last, smaller batch too)
gets its own.

The executable is used only where it is the step a retrace would compile: the stage the plan was
made for, with exactly the learning-rate rules the stage gets when it begins (a warm-up's first
iteration is predicted from the steps per epoch; a wrong guess, or anything else that differs,
retraces as before). Elsewhere the fit retraces: another backend, ``run_eagerly`` or
``jit_compile=False``, ``steps_per_execution`` above 1, a ``keras.distribution``, Flax NNX, a
plateau schedule (its stage changes are not known ahead), the stages a masked run shares one step
for (:mod:`~keras_tlft.callbacks.stage_masks`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from keras_tlft import _keras_compat as compat

__all__ = ["CompileAhead", "why_not_ahead"]


def why_not_ahead(model, schedule) -> str | None:
    """Why ``model``'s fit cannot compile stages ahead (``None``: it can)."""
    import keras

    backend = keras.backend.backend()
    if backend != "jax":
        return f"the {backend} backend (JAX only: its stage change is mostly XLA's compile)"
    if getattr(model, "run_eagerly", False) or not getattr(model, "jit_compile", False):
        return "run_eagerly or jit_compile=False: no compiled step"
    if getattr(model, "steps_per_execution", 1) != 1:
        return "steps_per_execution above 1"
    if keras.distribution.distribution() is not None:
        return "a keras.distribution"
    is_nnx = getattr(keras.config, "is_nnx_enabled", None)
    if is_nnx is not None and is_nnx():
        return "Flax NNX"
    if schedule.trigger != "epoch":
        return "a plateau schedule: its stage changes are not known ahead"
    return None


@dataclass
class _Plan:
    """The next stage, its learning-rate rules as predicted, and one compile per batch shape."""

    index: int
    table: dict
    futures: dict = field(default_factory=dict)  # batch-shape key -> Future of an executable


class CompileAhead:
    """Compiles each stage's train step ahead, while the stage before it trains.

    Args:
        stager: the fit's :class:`~keras_tlft.callbacks.staging.Stager`.
        params: the callback's ``params`` (the fit's epochs and steps per epoch).
        masked_from: the first stage of a masked run's shared step (``None``: not masked).
    """

    def __init__(self, stager, params, masked_from: int | None):
        self.stager, self.model = stager, stager.model
        self.epochs = (params or {}).get("epochs") or 0
        self.steps = (params or {}).get("steps")
        self.masked_from = masked_from
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keras-tlft-compile")
        self.plan: _Plan | None = None
        self.shapes: dict = {}  # batch-shape key -> its abstract batch, in the order met
        self.compiled = 0  # executables compiled ahead
        self.used = 0  # stage changes that installed one (or more)
        self.missed: list[str] = []  # why a plan was not used

    def enter(self, index: int, epoch: int) -> bool:
        """Stage ``index`` begins at ``epoch`` (its rules set): install its step, compiled
        ahead when the plan fits; then plan the next stage. Always ``True`` (no retrace: the
        installed step traces itself when nothing was compiled ahead)."""
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
        compat.set_jax_train_function(self.model, _StageStep(self, futures))
        self.plan = self._plan(index + 1, epoch)
        return True

    def _plan(self, index: int, epoch: int) -> _Plan | None:
        """The plan for stage ``index`` (``None``: not compiled ahead), made while the model's
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

    def met(self, key, batch) -> None:
        """A step has been dispatched on a batch of shape ``key``: compile the planned stage
        for every batch shape met so far that it lacks."""
        if key is not None and key not in self.shapes:
            self.shapes[key] = batch
        plan = self.plan
        if plan is None:
            return
        for known, abstract in self.shapes.items():
            if known not in plan.futures:
                lowered = self._lower(plan, abstract)
                if lowered is None:
                    self.plan = None
                    return
                plan.futures[known] = self.pool.submit(lowered.compile)
                self.compiled += 1

    def _lower(self, plan: _Plan, batch):
        """Keras's train step traced and lowered for ``plan``'s stage (its flags and rules set
        for the moment, then put back); ``None`` if that fails (the stage retraces)."""
        import jax

        stager = self.stager
        staged = stager.staged
        rules = staged.rules
        try:
            with stager.flags_of(plan.index):
                staged.rules = plan.table
                state = compat.jax_state_layout(self.model)
                return jax.jit(self.model.train_step, donate_argnums=0).lower(state, batch)
        except Exception as exc:  # an optimisation only: the stage retraces instead
            self.missed.append(f"stage {plan.index + 1}: {type(exc).__name__}: {exc}")
            return None
        finally:
            staged.rules = rules

    def close(self) -> None:
        """Stop compiling (at the end of the fit): compiles not begun are dropped."""
        self.plan = None
        self.pool.shutdown(wait=False, cancel_futures=True)


class _StageStep:
    """``model.train_function`` for one stage (``steps_per_execution=1``, as Keras's own): the
    executable compiled ahead for the batch's shape, else Keras's train step jitted as
    ``make_train_function`` does (traced and compiled at its first call)."""

    def __init__(self, ahead: CompileAhead, futures: dict):
        import jax

        self.ahead = ahead
        self.futures = dict(futures)
        self.executables: dict = {}
        self.jitted = jax.jit(ahead.model.train_step, donate_argnums=0)
        self.started = False

    def __call__(self, state, iterator):
        batch = next(iterator)
        key, abstract = batch_shape(batch)
        future = self.futures.pop(key, None)
        if future is not None:
            try:
                self.executables[key] = future.result()  # waits for a compile under way
            except Exception as exc:  # the jitted step below compiles it instead
                self.ahead.missed.append(f"compile failed: {type(exc).__name__}: {exc}")
        step = self.executables.get(key)
        try:
            out = (step or self.jitted)(state, batch)
        except (TypeError, ValueError) as exc:
            if step is None:
                raise
            # The executable checks its arguments before it runs (nothing is donated yet): a
            # state laid out otherwise than planned (a callback changed the model) retraces.
            self.ahead.missed.append(f"not the planned arguments: {exc}")
            del self.executables[key]
            out = self.jitted(state, batch)
        if not self.started or (key is not None and key not in self.ahead.shapes):
            self.started = True
            self.ahead.met(key, abstract)  # while the step just dispatched runs
        return out


def batch_shape(batch) -> tuple:
    """``(key, abstract batch)``: a hashable key of the batch's structure, shapes and dtypes,
    and the batch as ``jax.ShapeDtypeStruct`` leaves (``(None, None)`` for a leaf without a
    dtype)."""
    import jax
    import numpy as np

    leaves, treedef = jax.tree_util.tree_flatten(batch)
    if not all(hasattr(leaf, "dtype") for leaf in leaves):
        return None, None
    specs = [jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype,
                                  weak_type=bool(getattr(leaf, "weak_type", False)))
             for leaf in leaves]
    key = (treedef, tuple((s.shape, str(s.dtype), s.weak_type) for s in specs))
    return key, jax.tree_util.tree_unflatten(treedef, specs)

"""The next stage's train step compiled while the current stage trains: JAX's part of
:mod:`~keras_tlft.callbacks.compile_ahead`.

On JAX most of a stage change is XLA compiling the new step. Once a stage's first step is
dispatched, :class:`JaxAhead` traces and lowers the next stage's step in the main thread (while
the dispatched step runs) and hands ``lowered.compile()`` to the background thread: XLA's compile
releases the GIL. Each batch shape the fit has met (a last, smaller batch too) gets its own
executable.
"""

from __future__ import annotations

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks.compile_ahead import CompileAhead, _Plan

__all__ = ["JaxAhead"]


class JaxAhead(CompileAhead):
    """:class:`~keras_tlft.callbacks.compile_ahead.CompileAhead` on JAX: one executable per
    batch shape, compiled by XLA in the background thread."""

    def __init__(self, stager, params, masked_from: int | None):
        super().__init__(stager, params, masked_from)
        self.shapes: dict = {}  # batch-shape key -> its abstract batch, in the order met

    def install(self, futures: dict) -> None:
        compat.set_jax_train_function(self.model, _StageStep(self, futures))

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

        try:
            with self.planned(plan):
                state = compat.jax_state_layout(self.model)
                return jax.jit(self.model.train_step, donate_argnums=0).lower(state, batch)
        except Exception as exc:  # an optimisation only: the stage retraces instead
            self.missed.append(f"stage {plan.index + 1}: {type(exc).__name__}: {exc}")
            return None


class _StageStep:
    """``model.train_function`` for one stage (``steps_per_execution=1``, as Keras's own): the
    executable compiled ahead for the batch's shape, else Keras's train step jitted as
    ``make_train_function`` does (traced and compiled at its first call)."""

    def __init__(self, ahead: JaxAhead, futures: dict):
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

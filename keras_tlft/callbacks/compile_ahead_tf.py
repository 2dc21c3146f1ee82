"""The next stage's train step traced and instantiated while the current stage trains:
TensorFlow's part of :mod:`~keras_tlft.callbacks.compile_ahead`.

A TensorFlow stage change is the retrace (Python) and then TensorFlow instantiating the new
function at its first call (grappler's optimisation, the kernels' creation; C++, without the
GIL). :class:`TensorFlowAhead` traces the next stage's step in the main thread once a stage's
first step has run, and has the background thread call it once, so that TensorFlow instantiates
it there. That call must change nothing: the step is Keras's ``train_step`` inside a
``tf.cond`` on a boolean argument, and the background call passes ``False`` on a batch of zeros,
so only the other branch (the logs' zeros) runs. The stage's steps pass ``True``. The stage
change then installs the instantiated function.

The step installed for every stage of such a fit is this one (the first stage's too, traced at
its first call), so a stage trains alike whether its step was prepared ahead or not.
"""

from __future__ import annotations

from keras_tlft import _keras_compat as compat
from keras_tlft.callbacks.compile_ahead import CompileAhead
from keras_tlft.callbacks.optim import retrace

__all__ = ["TensorFlowAhead", "gated_step"]


def gated_step(model):
    """``tf.function(step)``: ``step(data, run)`` is Keras's train step on ``data`` where the
    boolean tensor ``run`` is true, and returns the logs' zeros, running nothing else, where it
    is false."""
    import tensorflow as tf

    def step(data, run):
        logs = {}

        def train():
            logs["out"] = model.distribute_strategy.run(model.train_step, args=(data,))
            return logs["out"]

        def skip():
            return tf.nest.map_structure(
                lambda t: tf.zeros([d if d is not None else 0 for d in t.shape], t.dtype),
                logs["out"])

        return tf.cond(run, train, skip)

    return tf.function(step, autograph=False)


def plain_spec(iterator):
    """The element spec of ``iterator`` if it is a ``tf.data`` iterator of plain tensors
    (``None`` otherwise: Keras's own step handles other data)."""
    import tensorflow as tf

    if not isinstance(iterator, tf.data.Iterator):
        return None
    spec = iterator.element_spec
    if not all(isinstance(s, tf.TensorSpec) for s in tf.nest.flatten(spec)):
        return None
    return spec


def zeros_of(spec):
    """A batch of zeros matching ``spec`` (unknown dimensions of length 1)."""
    import tensorflow as tf

    return tf.nest.map_structure(
        lambda s: tf.zeros([d if d is not None else 1 for d in s.shape], s.dtype), spec)


def _instantiate(concrete, zeros):
    """Call ``concrete`` once with ``run=False``: TensorFlow instantiates the function, and
    only its zeros branch runs."""
    import tensorflow as tf

    concrete(zeros, tf.constant(False))
    return concrete


class TensorFlowAhead(CompileAhead):
    """:class:`~keras_tlft.callbacks.compile_ahead.CompileAhead` on TensorFlow: one concrete
    function per element spec, instantiated in the background thread."""

    def __init__(self, stager, params, masked_from: int | None):
        super().__init__(stager, params, masked_from)
        self.keras_step = None  # why the fit went back to Keras's own step, if it did

    def install(self, futures: dict) -> None:
        if self.keras_step is not None:
            retrace(self.model)
            return
        compat.set_tf_train_function(self.model, _StageStep(self, futures))

    def trace(self, spec):
        """The gated step traced for the flags and rules in force, for ``spec``."""
        import tensorflow as tf

        return gated_step(self.model).get_concrete_function(spec, tf.TensorSpec([], tf.bool))

    def met(self, key, spec) -> None:
        """A stage's first step has run on data of element spec ``spec``: trace the planned
        stage's step and have the background thread instantiate it."""
        plan = self.plan
        if plan is None or key in plan.futures:
            return
        try:
            with self.planned(plan):
                concrete = self.trace(spec)
        except Exception as exc:  # an optimisation only: the stage retraces instead
            self.missed.append(f"stage {plan.index + 1}: {type(exc).__name__}: {exc}")
            self.plan = None
            return
        plan.futures[key] = self.pool.submit(_instantiate, concrete, zeros_of(spec))
        self.compiled += 1

    def back_to_keras(self, why: str, iterator):
        """Keras's own step from now on (data this step cannot take): retrace and run it."""
        self.keras_step, self.plan = why, None
        self.missed.append(f"Keras's own step: {why}")
        retrace(self.model)
        return self.model.train_function(iterator)


class _StageStep:
    """``model.train_function`` for one stage (``steps_per_execution=1``, as Keras's own): the
    gated step prepared ahead for the data's element spec, else traced now; called with
    ``run=True``."""

    def __init__(self, ahead: TensorFlowAhead, futures: dict):
        import tensorflow as tf

        self.ahead = ahead
        self.futures = dict(futures)
        self.steps: dict = {}
        self.run = tf.constant(True)
        self.started = False

    def __call__(self, iterator):
        spec = plain_spec(iterator)
        if spec is None:
            return self.ahead.back_to_keras("data other than a tf.data iterator of tensors",
                                            iterator)
        key = str(spec)
        future = self.futures.pop(key, None)
        if future is not None:
            try:
                self.steps[key] = future.result()  # waits for an instantiation under way
            except Exception as exc:  # traced again below
                self.ahead.missed.append(f"instantiation failed: {type(exc).__name__}: {exc}")
        step = self.steps.get(key)
        if step is None:
            try:
                step = self.steps[key] = self.ahead.trace(spec)
            except Exception as exc:  # a train step the gate cannot wrap: Keras's own
                return self.ahead.back_to_keras(f"{type(exc).__name__}: {exc}", iterator)
        out = step(next(iterator), self.run)
        if not self.started:
            self.started = True
            self.ahead.met(key, spec)
        return out

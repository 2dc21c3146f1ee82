"""The backbone's forward pass traced once per ``fit`` (TensorFlow).

A stage change that retraces the train step walks every layer of the model again in Python,
although the backbone's forward pass is the same in every stage: unfreezing a block changes
which gradients the step computes and which variables the optimizer updates, not what the
layers compute. :class:`TracedForward` wraps the nested backbone's ``call`` in one
``tf.function`` for the fit, keyed by what does change the forward pass (the ``training``
argument, each ``BatchNormalization``'s ``trainable`` flag and whether each layer follows
``training``), so a retrace reuses the traced backbone and traces only the head, the loss, the
gradients and the optimizer's update. TensorFlow inlines the nested function when it optimises
the step, so the step is the same graph as before and trains bit for bit alike
(``tests/test_traced_forward.py``).

It applies only where that is certain to hold, and the fit retraces as before otherwise: the
TensorFlow backend, a backbone nested in the model as a ``keras.Model``, no distribution strategy,
no ``run_eagerly``, and a backbone built from Keras's own layers without activity regularizers
(a layer of another package may read ``self.trainable`` in ``call``, or add a loss there, whose
tensor would belong to the nested function's graph).
"""

from __future__ import annotations

from keras_tlft import _keras_compat as compat

__all__ = ["TracedForward", "why_not_traced"]

MARK = "_keras_tlft_traced_forward"  # on the wrapper, so that a fit that raised is undone


def why_not_traced(model, container) -> str | None:
    """Why the backbone's forward pass cannot be traced once for ``model``'s fit (``None``:
    it can)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"the {keras.backend.backend()} backend"
    if container is None or not isinstance(container, keras.Model):
        return "the backbone's layers are not nested in the model as a keras.Model"
    if getattr(model, "run_eagerly", False):
        return "run_eagerly"
    import tensorflow as tf

    strategy = model.distribute_strategy
    if tf.distribute.has_strategy() or strategy is not tf.distribute.get_strategy():
        return "a distribution strategy"
    if "call" in vars(container) and not hasattr(container.call, MARK):
        return "the backbone's call is replaced on the instance"
    for layer in compat.sublayers(container):
        if not type(layer).__module__.startswith("keras."):
            return f"layer {layer.name!r} is not one of Keras's own ({type(layer).__name__})"
        if getattr(layer, "activity_regularizer", None) is not None:
            return f"layer {layer.name!r} has an activity regularizer"
    return None


class TracedForward:
    """Wraps ``container.call`` in one ``tf.function`` until :meth:`remove`.

    Symbolic and eager calls (building a model, ``predict`` with ``run_eagerly``) and calls with a
    ``mask`` or other arguments go to the original ``call``; only calls inside a traced function
    (the train, test and predict steps) use the traced one.
    """

    def __init__(self, container):
        import keras
        import tensorflow as tf

        self.container = container
        self.traces = 0
        self.remove()  # left by a fit that raised (Keras skips on_train_end then)
        original = container.call
        batchnorm = [layer for layer in compat.sublayers(container)
                     if isinstance(layer, keras.layers.BatchNormalization)]
        layers = compat.sublayers(container, include_self=True)

        def traced(inputs, training, key):
            del key  # part of the cache key only
            self.traces += 1
            return original(inputs, training=training)

        forward = tf.function(traced, autograph=False)

        def call(inputs, training=None, mask=None, **kwargs):
            if mask is not None or kwargs or not tf.inside_function() or any(
                    isinstance(t, keras.KerasTensor) for t in tf.nest.flatten(inputs)):
                return original(inputs, training=training, mask=mask, **kwargs)
            key = (tuple(layer.trainable for layer in batchnorm),
                   tuple(compat.follows_training(layer) for layer in layers))
            return forward(inputs, training, key)

        setattr(call, MARK, True)
        container.call = call

    def remove(self) -> None:
        """Give the backbone its own ``call`` back."""
        if hasattr(vars(self.container).get("call"), MARK):
            del self.container.call

"""Keras's Adam on TensorFlow as one ``ResourceApplyAdam`` op per variable.

Keras's ``Adam.update_step`` builds each variable's update from about 40 TensorFlow ops
(reads, casts, the bias corrections' powers, the two moments' and the variable's assignments):
a ``tf.function`` updating 10 variables traces 402 ops with it and 63 with this module. A stage
change retraces the train step and TensorFlow instantiates it again, so a change into the whole
of MobileNetV2 (158 variables) pays for some 6,000 of them: on a 2-core CPU
``benchmarks/callback_cost.py --threads 1 --no-compile-ahead`` put that change at 3.24 s, and
4.18 s with ``--no-fused-adam``. TensorFlow's own kernel computes the same update, in the same
order of operations, as one op::

    alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    var -= m * alpha / (sqrt(v) + epsilon)

:func:`fused_adam` gives that update for an optimizer whose ``update_step`` is Keras's Adam's
(``Adam``, ``AdamW``: weight decay is a separate step), without ``amsgrad``, and applies it only
where it is Keras's update: a dense gradient, a ``float32`` or ``float64`` variable, no
``tf.distribute`` strategy. Elsewhere Keras's own ``update_step`` runs. The per-step scalars (the
rate, the powers) are made once per learning rate and dtype in a step, not once per variable.
"""

from __future__ import annotations

from collections.abc import Callable

from keras_tlft import _keras_compat as compat

__all__ = ["fused_adam"]

DTYPES = ("float32", "float64")


def fused_adam(optimizer, per_step: Callable) -> Callable | None:
    """``update(gradient, variable, learning_rate) -> bool``, Keras's Adam step for one variable
    as one op (``False``: not applied, run Keras's own), or ``None`` where ``optimizer`` is not
    Keras's Adam on TensorFlow.

    ``per_step(key, holder, make)`` returns ``make()``, made once per ``key`` within a step
    (:meth:`~keras_tlft.callbacks.optim.StagedOptimizer._per_step`).
    """
    import keras

    adam = keras.optimizers.Adam
    if (keras.backend.backend() != "tensorflow" or not isinstance(optimizer, adam)
            or type(optimizer).update_step is not adam.update_step or optimizer.amsgrad):
        return None
    import tensorflow as tf

    def scalars(learning_rate, dtype) -> dict:
        step = tf.cast(optimizer.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(optimizer.beta_1, dtype), tf.cast(optimizer.beta_2, dtype)
        return {"lr": tf.cast(learning_rate, dtype), "beta1": beta_1, "beta2": beta_2,
                "beta1_power": tf.pow(beta_1, step), "beta2_power": tf.pow(beta_2, step),
                "epsilon": tf.cast(optimizer.epsilon, dtype)}

    def update(gradient, variable, learning_rate) -> bool:
        dtype = variable.dtype
        if (dtype not in DTYPES or isinstance(gradient, tf.IndexedSlices)
                or tf.distribute.has_strategy()):
            return False
        m, v = compat.adam_moments(optimizer, variable)
        args = per_step(("adam", id(learning_rate), dtype), learning_rate,
                        lambda: scalars(learning_rate, dtype))
        tf.raw_ops.ResourceApplyAdam(
            var=compat.tf_handle(variable), m=compat.tf_handle(m), v=compat.tf_handle(v),
            grad=tf.cast(gradient, dtype), **args)
        return True

    return update

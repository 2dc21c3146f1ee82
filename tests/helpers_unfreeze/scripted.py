"""A metric the test writes itself: fits of the tiny model whose ``score`` follows a script."""

from __future__ import annotations

import keras

from helpers_unfreeze.tiny import data, nested_model, values


class Scripted(keras.callbacks.Callback):
    """Writes ``scores[epoch]`` into the logs as ``score`` (list it before the callbacks that
    read it), and keeps the head's weights as trained in each epoch."""

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)
        self.trained = {}

    def on_epoch_end(self, epoch, logs=None):
        logs["score"] = self.scores[epoch]
        self.trained[epoch] = values(self.model.get_layer("head").weights)


def fit_scripted(scores, callbacks, model=None, compile_model=True):
    """``model`` (a new tiny one by default) fitted for ``len(scores)`` epochs, one step each,
    with ``Scripted(scores)`` (or ``scores``, a ``Scripted``) before ``callbacks``."""
    scripted = scores if isinstance(scores, Scripted) else Scripted(scores)
    model = model or nested_model()
    if compile_model:
        model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(8)
    return model.fit(x, y, batch_size=8, epochs=len(scripted.scores), verbose=0,
                     shuffle=False, callbacks=[scripted, *callbacks])

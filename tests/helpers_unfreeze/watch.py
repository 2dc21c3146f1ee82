"""A callback that counts the traces of the train step: TensorFlow and JAX call the Python
``train_step`` once per trace (PyTorch, eager, once per step)."""

from __future__ import annotations

import keras


class TraceWatch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.traces = 0

    def set_model(self, model):
        super().set_model(model)
        if "train_step" not in vars(model):
            train_step = type(model).train_step

            def counting(*args):
                self.traces += 1
                return train_step(model, *args)

            model.train_step = counting

"""join_histories: one History for a run made of several fit calls."""

import keras
import pytest

from keras_tlft.history import join_histories


def test_join_histories_renumbers_repeated_epochs_and_pads_missing_metrics():
    first, second = keras.callbacks.History(), keras.callbacks.History()
    first.epoch, first.history = [0, 1], {"loss": [1.0, 0.9]}
    second.epoch, second.history = [0, 1], {"loss": [0.8, 0.7], "lr": [0.1, 0.1]}
    joined = join_histories(first, second)
    assert joined.epoch == [0, 1, 2, 3]
    assert joined.history == {"loss": [1.0, 0.9, 0.8, 0.7], "lr": [None, None, 0.1, 0.1]}
    with pytest.raises(TypeError, match=r"Received: histories\[1\]=\{\}"):
        join_histories(first, {})

"""``fine_tune`` training a stage on its frozen prefix's cached outputs, on the current backend
(test_backends.py reruns this module on JAX and PyTorch)."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import SHAPE, data, nested_model, values  # noqa: E402

from keras_tlft import fine_tune  # noqa: E402
from keras_tlft.training.prefix_cache import split_at_frozen_prefix  # noqa: E402

BLOCKS = [("block1", "^input"), ("block2", "^block2_"), ("block3", "^block3_")]
# The top block trains from epoch 1 to the end: three epochs above a frozen block1-block2.
SCHEDULE = {0: "none", 1: 1}


@pytest.fixture
def cached_stages(monkeypatch):
    """The epochs each cached stage trained (first, stop)."""
    import keras_tlft.cache

    calls = []
    real = keras_tlft.cache.fit_on_features

    def spy(model, extractor, head, *args, **kwargs):
        calls.append((kwargs["fit_kwargs"].get("initial_epoch", 0), kwargs["epochs"]))
        return real(model, extractor, head, *args, **kwargs)

    monkeypatch.setattr(keras_tlft.cache, "fit_on_features", spy)
    return calls


def run(x=None, verbose=0, schedule=SCHEDULE, epochs=4, **kwargs):
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", metrics=["mae"])
    x_train, y_train = data(16) if x is None else (x, None)
    # One batch per epoch: the cached stage's shuffling cannot change the sum of a batch.
    history = fine_tune(model, x_train, y_train, epochs=epochs, frozen_epochs=1,
                        schedule=schedule, blocks=BLOCKS, verbose=verbose,
                        batch_size=16 if x is None else None,
                        validation_data=None if x is not None else data(8, seed=1), **kwargs)
    return values(model.weights), history


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_cached_prefix_trains_the_same_weights_as_model_fit(cached_stages):
    cached, history = run()
    # The one frozen epoch trains in model.fit; the top block's three-epoch stage is cached.
    assert cached_stages == [(1, 4)]
    plain, plain_history = run(cache_prefix=False)
    assert cached_stages == [(1, 4)]  # the plain run caches nothing
    assert_same_weights(cached, plain)
    assert history.epoch == plain_history.epoch == [0, 1, 2, 3]
    np.testing.assert_allclose(history.history["val_loss"], plain_history.history["val_loss"],
                               rtol=1e-5)
    assert history.history["trainable_params"] == plain_history.history["trainable_params"]


def test_cached_prefix_on_disk_past_the_memory_cap_trains_the_same_weights(cached_stages):
    on_disk, _ = run(max_memory_bytes=0)
    plain, _ = run(cache_prefix=False)
    assert cached_stages == [(1, 4)]
    assert_same_weights(on_disk, plain)


def test_a_dataset_falls_back_to_model_fit_and_says_why_at_verbose_1(cached_stages, capsys):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return data(16)

    run(x=Batches(), verbose=1)
    assert cached_stages == []
    out = capsys.readouterr().out
    assert ("fine_tune: stage 1 (epochs 1-3) in model.fit: the data is not NumPy arrays"
            in out)


def test_a_one_epoch_stage_trains_in_model_fit_without_a_word(cached_stages, capsys):
    run(verbose=1, schedule={0: "none", 1: 1, 2: "all"}, epochs=3)
    assert cached_stages == []
    assert "fine_tune: stage" not in capsys.readouterr().out


def residual_model():
    """A backbone with a skip connection: stem -> [a -> b] + stem -> top -> pool."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    stem = keras.layers.Conv2D(4, 1, name="stem")(inputs)
    a = keras.layers.Conv2D(4, 1, name="a")(stem)
    b = keras.layers.Conv2D(4, 1, name="b")(a)
    added = keras.layers.Add(name="add")([stem, b])
    top = keras.layers.Conv2D(4, 1, name="top")(added)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(top),
                       name="backbone")
    outer = keras.Input(SHAPE)
    return keras.Model(outer, keras.layers.Dense(2, name="dense")(base(outer))), base


def test_the_cut_moves_below_a_skip_connection_to_one_tensor():
    model, base = residual_model()
    for layer in base.layers:
        layer.trainable = layer.name in ("b", "top")
    extractor, rest, cut = split_at_frozen_prefix(model, base)
    # Above `a`, two tensors cross (a's output and the skip): the cut is at `a`, one tensor.
    assert cut.name == "a"
    x, _ = data(4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rest(extractor(x))),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)
    assert {w.path for w in rest.trainable_weights} == {
        w.path for w in model.trainable_weights}


def test_nothing_to_cache_when_the_backbone_trains_from_its_first_layer():
    model, base = residual_model()
    with pytest.raises(ValueError, match="the backbone trains from its first layers"):
        split_at_frozen_prefix(model, base)


def test_stages_in_later_parts_are_not_reported_as_never_running():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(schedule={0: "none", 1: 1, 3: 2}, epochs=5)  # two cached stages: two fits
    assert not [w for w in caught if "will never run" in str(w.message)]

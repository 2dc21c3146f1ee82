"""One backbone finder for ProgressiveUnfreeze and fit_frozen alike."""

import keras
import numpy as np
import pytest

from keras_tlft import ProgressiveUnfreeze, fit_frozen
from keras_tlft.discovery import find_backbone


def _features():
    features = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3, name="conv")], name="features"
    )
    features.trainable = False
    return features


def _nested(seed=0):
    """A compiled model around one frozen nested model that is not named "backbone"."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(_features()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def _reusing(seed=0):
    """A compiled model that reuses a frozen base model's layers: Model(base.input, ...)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    base = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs), name="features")
    base.trainable = False
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    model = keras.Model(base.input, keras.layers.Dense(3, activation="softmax", name="out")(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model, base


def _data(n=16):
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


def _out(model):
    return [keras.ops.convert_to_numpy(w) for w in model.get_layer("out").weights]


def test_the_only_nested_model_is_the_backbone_for_both():
    name, layers, container = find_backbone(_nested())
    assert name == "features" and container is not None and len(layers) == 1
    x, y = _data()
    plain, cached = _nested(), _nested()
    plain.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    history = fit_frozen(cached, x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert history.epoch == [0, 1]
    for left, right in zip(_out(cached), _out(plain)):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)


def test_the_base_model_whose_layers_are_reused_is_accepted_by_both():
    model, base = _reusing()
    name, layers, container = find_backbone(model, base)
    assert name == base.name and container is None and layers[-1].name == "conv"
    x, y = _data()
    (plain, _), (cached, cached_base) = _reusing(), _reusing()
    plain.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    fit_frozen(cached, x, y, epochs=2, batch_size=8, shuffle=False, backbone=cached_base,
               verbose=0)
    for left, right in zip(_out(cached), _out(plain)):
        np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ProgressiveUnfreeze({0: "all"}, backbone=base)])
    assert base.get_layer("conv").trainable


def test_a_misspelt_backbone_name_gets_the_same_message_from_both():
    x, y = _data()
    model = _nested()
    with pytest.raises(ValueError) as frozen:
        fit_frozen(model, x, y, backbone="feature")
    with pytest.raises(ValueError) as callback:
        model.fit(x, y, verbose=0, callbacks=[ProgressiveUnfreeze("two_phase", "feature")])
    assert str(frozen.value) == str(callback.value)
    assert "No layer named 'feature' in model" in str(frozen.value)
    assert "Did you mean: features?" in str(frozen.value)
    assert str(frozen.value).endswith("Received: backbone='feature'")

"""The private Keras API keras-tlft relies on still behaves as the compat module says."""

import keras

from keras_tlft import _keras_compat as compat


class _Composite(keras.layers.Layer):
    """A layer that keeps a BatchNormalization in an attribute (as keras-hub's stages do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization(name="inner_bn")

    def call(self, x):
        return self.norm(x)


def test_sublayers_finds_layers_kept_in_attributes():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, _Composite(name="composite")(keras.layers.Dense(4)(inputs)))
    names = [layer.name for layer in compat.sublayers(model)]
    assert "composite" in names and "inner_bn" in names
    assert [layer.name for layer in compat.sublayers(model, recursive=False)][-1] == "composite"
    assert compat.sublayers(model, include_self=True)[0] is model


def test_producer_walks_a_functional_graph_backwards():
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3, name="d")
    hidden = dense(inputs)
    outputs = keras.layers.ReLU(name="r")(hidden)
    operation, parents = compat.producer(outputs)
    assert operation.name == "r" and parents == [hidden]
    assert compat.producer(hidden)[0] is dense


def test_draws_random_numbers_tells_random_layers_apart():
    assert compat.draws_random_numbers(keras.layers.Dropout(0.5))
    assert compat.draws_random_numbers(keras.layers.RandomFlip())
    assert not compat.draws_random_numbers(keras.layers.Dense(2))


def test_compile_arguments_keep_a_plain_function_loss():
    def my_loss(y, p):
        return keras.ops.mean((y - p) ** 2)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", my_loss, metrics=["mae"])
    arguments = compat.compile_arguments(model)
    assert arguments["loss"] is my_loss and arguments["metrics"] == ["mae"]


def test_optimizer_build_bookkeeping_round_trips():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    assert compat.is_built_for(optimizer, model.trainable_variables)
    assert compat.built_variables(optimizer) == list(model.trainable_variables)
    kept = len(keras.optimizers.Adam().variables)
    compat.unbuild(optimizer, keep=kept)
    assert not optimizer.built and len(optimizer.variables) == kept
    assert not compat.is_built_for(optimizer, model.trainable_variables)
    assert compat.learning_rate_variable(optimizer) is not None
    nadam = keras.optimizers.Nadam()
    nadam.build(model.trainable_variables)
    assert compat.nadam_product(nadam) is not None
    assert compat.nadam_product(optimizer) is None


def test_adam_moments_are_the_state_adam_updates():
    import numpy as np

    variable = keras.Variable(np.ones((2,), "float32"))
    adam = keras.optimizers.Adam(0.1)
    adam.build([variable])
    adam.apply([keras.ops.convert_to_tensor(np.array([1.0, -2.0], "float32"))], [variable])
    m, v = compat.adam_moments(adam, variable)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m), [0.1, -0.2], rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), [0.001, 0.004], rtol=1e-4)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        assert compat.tf_handle(variable).dtype == tf.resource


def test_every_optimizer_method_keras_tlft_wraps_still_exists():
    for optimizer in (keras.optimizers.SGD(), keras.optimizers.Adam(), keras.optimizers.AdamW()):
        missing = [name for meaning, name in compat._OPTIMIZER_METHODS.items()
                   if meaning != "fused_update_step"
                   and not callable(getattr(optimizer, name, None))]
        assert missing == [], type(optimizer).__name__
    if keras.backend.backend() == "torch":
        assert callable(getattr(keras.optimizers.Adam(), "_parallel_update_step", None))


def test_monitor_mode_follows_the_direction_of_the_compiled_metric():
    import numpy as np

    seen = {}

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for cb in watchers:
                seen[(cb.monitor, cb.mode)] = compat.monitor_mode(cb)

    watchers = [keras.callbacks.EarlyStopping(monitor, mode=mode)
                for monitor, mode in [("val_r2_score", "auto"), ("val_mae", "auto"),
                                      ("loss", "auto"), ("val_mae", "max")]]
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=[keras.metrics.R2Score(), "mae"])
    x, y = np.ones((4, 2), "float32"), np.ones((4, 1), "float32")
    for cb in watchers:
        cb.set_model(model)
    model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[Record()])
    assert seen == {("val_r2_score", "auto"): "max", ("val_mae", "auto"): "min",
                    ("loss", "auto"): "min", ("val_mae", "max"): "max"}

"""The backbone's forward pass traced once per fit (TensorFlow): a retrace at a stage change
reuses it, and the model trains exactly as when every retrace walks the backbone again."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import SHAPE, data, nested_model  # noqa: E402
from helpers_unfreeze.watch import TraceWatch  # noqa: E402

from keras_tlft import ProgressiveUnfreeze  # noqa: E402

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="JAX and PyTorch do not trace the backbone once")
SCHEDULE = {0: "none", 1: 1, 2: 2, 3: "all"}


class Watch(TraceWatch):
    """Weights at each epoch end, traces of the train step and of the backbone's forward pass."""

    def __init__(self, unfreeze):
        super().__init__()
        self.unfreeze, self.weights, self.forward = unfreeze, [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])
        forward = self.unfreeze._forward
        self.forward.append(None if forward is None else forward.traces)


def run(traced=True, model=None, jit_compile="auto", validation=False, **options):
    model = model or nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse", jit_compile=jit_compile)
    x, y = data(16)
    # The traces counted here are the retraces' (with a core to spare, as on a GPU, the steps
    # would be prepared ahead instead: tests/test_unfreeze_ahead.py).
    options.setdefault("compile_ahead", False)
    unfreeze = ProgressiveUnfreeze(SCHEDULE, stage_change="retrace",
                                   trace_backbone_once=traced, **options)
    watch = Watch(unfreeze)
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, shuffle=False,
              validation_data=(x[:8], y[:8]) if validation else None,
              callbacks=[unfreeze, watch])
    return model, unfreeze, watch


def assert_same_training(a: Watch, b: Watch) -> None:
    for epoch, (wa, wb) in enumerate(zip(a.weights, b.weights)):
        for va, vb in zip(wa, wb):
            np.testing.assert_allclose(vb, va, rtol=1e-6, atol=1e-7, err_msg=f"epoch {epoch}")


@pytest.mark.parametrize("options", [{}, {"bn": "train", "backbone_lr_ratio": 0.5},
                                     {"bn": "affine", "warmup_steps": 2}],
                         ids=["bn-frozen", "bn-train", "bn-affine-warmup"])
def test_a_traced_forward_trains_as_retracing_everything_does(options):
    _, plain_cb, plain = run(traced=False, validation=True, **options)
    model, traced_cb, traced = run(validation=True, **options)
    assert plain_cb.traced_forward == (False, "trace_backbone_once=False")
    assert traced_cb.traced_forward == (True, "a nested backbone on TensorFlow")
    assert traced.traces == plain.traces == 4  # one trace of the step per stage, as before
    assert_same_training(plain, traced)
    # The frozen block did not move before its stage (epoch 3 unfreezes block1).
    kernel = [w.path for w in model.weights].index("block1_conv/kernel")
    np.testing.assert_array_equal(traced.weights[2][kernel], nested_model().get_weights()[kernel])
    assert not np.array_equal(traced.weights[4][kernel], traced.weights[2][kernel])


def test_every_stage_reuses_one_trace_of_the_backbone():
    _, _, frozen_bn = run()
    assert frozen_bn.traces == 4
    assert frozen_bn.forward[-1] == 1  # four stages, one trace of the backbone
    # Under bn="train", block1's BatchNorm starts training at epoch 3: the backbone computes
    # batch statistics from then on, a second forward pass.
    _, _, training_bn = run(bn="train")
    assert training_bn.forward == [1, 1, 1, 2, 2]


def test_the_backbone_gets_its_own_call_back_after_fit():
    model, unfreeze, _ = run()
    backbone = model.get_layer("backbone")
    assert "call" not in vars(backbone) and unfreeze._forward is None
    x, _ = data(4)
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x), rtol=1e-5, atol=1e-6)


def test_a_fit_that_raised_is_undone_by_the_next():
    model = nested_model()

    class Boom(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("boom")

    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, batch_size=8, epochs=4, verbose=0,
                  callbacks=[ProgressiveUnfreeze(SCHEDULE, stage_change="retrace"), Boom()])
    assert "call" in vars(model.get_layer("backbone"))  # Keras skipped on_train_end
    _, unfreeze, watch = run(model=model)
    assert unfreeze.traced_forward[0] is True and watch.forward[0] == 1
    assert "call" not in vars(model.get_layer("backbone"))


def test_jit_compiled_steps_train_alike():
    _, _, plain = run(traced=False, jit_compile=True)
    _, unfreeze, traced = run(jit_compile=True)
    assert unfreeze.traced_forward[0] is True
    assert_same_training(plain, traced)


class Scale(keras.layers.Layer):
    def call(self, x):
        return 2.0 * x


def custom_model(layer):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    x = layer(x)
    x = keras.layers.Conv2D(4, 1, name="block2_conv")(x)
    base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="block2_pool")(x),
                       name="backbone")
    base.trainable = False
    outer = keras.Input(SHAPE)
    return keras.Model(outer, keras.layers.Dense(2, name="dense")(base(outer)))


@pytest.mark.parametrize("layer, reason", [
    (lambda: Scale(name="scale"), "layer 'scale' is not one of Keras's own (Scale)"),
    (lambda: keras.layers.ActivityRegularization(l1=0.01, name="reg"),
     "layer 'reg' has an activity regularizer"),
], ids=["custom-layer", "activity-regularizer"])
def test_backbones_it_cannot_vouch_for_retrace_as_before(layer, reason):
    model = custom_model(layer())
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    unfreeze = ProgressiveUnfreeze({0: "none", 1: "all"}, stage_change="retrace",
                                   blocks=[("block1", "block1_"), ("block2", "block2_|scale|reg")])
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[unfreeze])
    assert unfreeze.traced_forward == (False, reason)


def test_verbose_says_whether_the_forward_pass_is_traced_once(capsys):
    run(verbose=1)
    assert "the backbone's forward pass is traced once" in capsys.readouterr().out


def test_trace_backbone_once_takes_a_bool():
    with pytest.raises(TypeError, match="trace_backbone_once must be True or False"):
        ProgressiveUnfreeze(trace_backbone_once="yes")
    config = ProgressiveUnfreeze(trace_backbone_once=False).get_config()
    assert ProgressiveUnfreeze.from_config(config).trace_backbone_once is False

"""ProgressiveUnfreeze on the current backend (CI runs this file once per KERAS_BACKEND)."""

from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import (  # noqa: E402
    data,
    flat_model,
    moved,
    nested_model,
    tiny_spec,
    values,
    vgg_like_model,
)

from keras_tlft import ProgressiveUnfreeze  # noqa: E402
from keras_tlft.callbacks.unfreeze import LOG_KEYS  # noqa: E402
from keras_tlft.schedule import two_phase  # noqa: E402

BACKEND = keras.backend.backend()


class Snapshots(keras.callbacks.Callback):
    """The backbone's weights at the end of every epoch."""

    def __init__(self, layer="backbone"):
        super().__init__()
        self.layer = layer
        self.epochs = []

    def on_train_begin(self, logs=None):
        self.start = values(self.model.get_layer(self.layer).weights)

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(values(self.model.get_layer(self.layer).weights))

    def moved_in(self, epoch) -> dict:
        before = self.start if epoch == 0 else self.epochs[epoch - 1]
        return moved(before, self.epochs[epoch])


def fit(model, callbacks, epochs=3, optimizer=None, n=16, batch_size=8, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse", **kwargs)
    x, y = data(n)
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False,
                     callbacks=callbacks)


KERNELS = ("block1_conv/kernel", "block2_conv/kernel", "block3_conv/kernel")


def test_backbone_trains_only_from_the_stage_that_unfreezes_it():
    snaps = Snapshots()
    fit(nested_model(), [ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}), snaps])
    assert [snaps.moved_in(0)[k] for k in KERNELS] == [False, False, False]
    assert [snaps.moved_in(1)[k] for k in KERNELS] == [False, False, True]
    assert [snaps.moved_in(2)[k] for k in KERNELS] == [True, True, True]


def test_weights_never_unfrozen_never_move_and_batchnorm_stays_frozen():
    snaps = Snapshots()
    fit(nested_model(), [ProgressiveUnfreeze({0: "none", 1: "from:block2_conv"}), snaps])
    last = moved(snaps.start, snaps.epochs[-1])
    assert last["block2_conv/kernel"] and last["block3_conv/kernel"]
    assert not last["block1_conv/kernel"] and not last["block1_conv/bias"]
    assert not any(last[k] for k in last if k.startswith("block1_bn"))


def test_train_bn_trains_batchnorm_of_unfrozen_blocks():
    model = nested_model()
    snaps = Snapshots()
    fit(model, [ProgressiveUnfreeze({0: "all"}, train_bn=True), snaps], epochs=1)
    assert snaps.moved_in(0)["block1_bn/gamma"]
    assert model.get_layer("backbone").get_layer("block1_bn").trainable


def _gradients(weights, x, y):
    """Minus the gradients of the mse loss at ``weights`` (one SGD step at learning rate 1 with
    everything but BatchNorm trainable: a trainable BatchNorm would run in training mode)."""
    model = nested_model()
    model.set_weights(weights)
    # Not model.trainable = True: on TensorFlow, Keras skips the setter (and its recursion into
    # the nested backbone) when the flag already has that value.
    model.get_layer("backbone").trainable = True
    model.get_layer("backbone").get_layer("block1_bn").trainable = False
    start = values(model.weights)
    model.compile(keras.optimizers.SGD(1.0), "mse")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    end = values(model.weights)
    return {k: start[k] - end[k] for k in start}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_each_block_steps_at_its_own_learning_rate(optimizer):
    x, y = data(16)
    model = nested_model()
    start = values(model.weights)
    grads = _gradients(model.get_weights(), x, y)
    opt = keras.optimizers.SGD(0.1) if optimizer == "sgd" else keras.optimizers.Adam(0.1)
    model.compile(opt, "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[
        ProgressiveUnfreeze({0: "all"}, backbone_lr_ratio=0.5, block_lr_decay=0.5)])
    end = values(model.weights)
    expected = {"head": 0.1, "block3": 0.05, "block2": 0.025, "block1_conv": 0.0125}
    for path, lr in expected.items():
        for key in (k for k in start if k.startswith(path)):
            step = start[key] - end[key]
            if optimizer == "sgd":  # SGD steps lr * gradient (to a few float32 ulps)
                ulps = 8 * np.spacing(np.abs(start[key]).max())
                np.testing.assert_allclose(step, lr * grads[key], rtol=1e-3, atol=ulps,
                                           err_msg=key)
            else:  # Adam's first step is lr * c|g| / (c|g| + eps), c = sqrt(1 - beta_2): ~lr
                g = np.abs(grads[key])
                usable = g > 1e-5
                c = np.sqrt(1 - 0.999)
                expected_step = lr * c * g / (c * g + 1e-7)
                np.testing.assert_allclose(np.abs(step[usable]), expected_step[usable],
                                           rtol=2e-3, err_msg=key)
            assert np.abs(step).max() > 0


def test_warmup_ramps_a_newly_unfrozen_block_step_by_step():
    x, y = data(8)
    model = nested_model()
    history = []

    class StepSize(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = values(self.model.get_layer("backbone").weights)

        def on_train_batch_end(self, batch, logs=None):
            after = values(self.model.get_layer("backbone").weights)
            k = "block3_conv/bias"
            history.append(float(np.abs(after[k] - self.before[k]).max()))

    # Lion steps exactly lr * sign(...): its step size is the learning rate in force.
    model.compile(keras.optimizers.Lion(0.1), "mse")
    model.fit(x, y, batch_size=1, epochs=2, verbose=0, shuffle=False, callbacks=[
        ProgressiveUnfreeze({0: "none", 1: 1}, warmup_steps=4), StepSize()])
    np.testing.assert_allclose(history[8:13], [0.025, 0.05, 0.075, 0.1, 0.1], rtol=1e-4)
    assert history[:8] == [0.0] * 8


def test_learning_rate_schedule_drives_head_and_backbone():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    history = fit(nested_model(), [ProgressiveUnfreeze({0: "all"}, backbone_lr_ratio=0.1)],
                  optimizer=keras.optimizers.SGD(schedule), epochs=2)
    # Two steps per epoch; logs show the rates in force after each: 0.1 * 0.5 ** (2/2, 4/2).
    np.testing.assert_allclose(history.history["head_lr"], [0.05, 0.025], rtol=1e-5)
    np.testing.assert_allclose(history.history["backbone_lr"],
                               np.array(history.history["head_lr"]) * 0.1, rtol=1e-5)


def _check_stage_history(h):
    assert h["unfreeze_stage"] == [0, 1, 2]
    assert h["unfrozen_blocks"] == [0, 1, 3]
    assert h["trainable_params"][0] == 10 and h["trainable_params"][0] < h["trainable_params"][1]
    assert h["head_lr"] == pytest.approx([0.01] * 3)
    assert h["backbone_lr"] == pytest.approx([0.0, 1e-3, 1e-3])


def test_the_stage_reaches_the_history_but_not_the_progress_bar(tmp_path, capfd):
    path = tmp_path / "log.csv"
    unfreeze = ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}, backbone_lr_ratio=0.1)
    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=2, shuffle=False,
                        callbacks=[unfreeze, keras.callbacks.CSVLogger(str(path))])
    _check_stage_history(history.history)
    _check_stage_history(unfreeze.history)
    assert unfreeze.history["epoch"] == [0, 1, 2]
    assert all(len(v) == 3 for v in history.history.values())  # one value an epoch, once
    epoch_lines = [line for line in capfd.readouterr().out.splitlines() if " - loss:" in line]
    assert len(epoch_lines) == 3
    assert not any(key in line for line in epoch_lines for key in LOG_KEYS)
    assert "unfreeze_stage" not in path.read_text()


def test_log_details_puts_the_stage_in_logs_for_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    history = fit(nested_model(), [
        ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}, backbone_lr_ratio=0.1,
                            log_details=True),
        keras.callbacks.CSVLogger(str(path))])
    _check_stage_history(history.history)
    assert all(len(v) == 3 for v in history.history.values())  # not recorded twice
    rows = list(csv.DictReader(path.open()))
    assert [int(r["unfreeze_stage"]) for r in rows] == [0, 1, 2]
    with pytest.raises(ValueError, match="log_details must be True or False"):
        ProgressiveUnfreeze(log_details="yes")


def test_verbose_prints_blocks_and_one_line_per_stage(capsys):
    fit(nested_model(), [ProgressiveUnfreeze({0: "none", 2: 1}, verbose=1)])
    out = capsys.readouterr().out
    assert ("backbone 'backbone', 7 layers in 3 blocks (derived from layer names): "
            "block1 [0-3]") in out
    assert out.count("ProgressiveUnfreeze stage") == 2
    assert "Epoch 3: ProgressiveUnfreeze stage 2/2 (unfreeze=1, from epoch 2): 1 block" in out


def test_two_phase_trains_everything_at_the_low_rate():
    history = fit(nested_model(), [ProgressiveUnfreeze(two_phase(1, 1e-5))], epochs=2)
    assert history.history["head_lr"] == pytest.approx([1e-2, 1e-5])
    assert history.history["backbone_lr"] == pytest.approx([0.0, 1e-5])


def test_optimizer_state_of_the_head_is_kept_across_a_stage_change():
    def moments(model):
        return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables
                if "head" in v.path and "momentum" in v.path}

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.last = moments(self.model)

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.at_change = moments(self.model)

    for reset in (False, True):
        watch = Watch()
        cb = ProgressiveUnfreeze({0: "none", 1: "all"}, reset_optimizer_state=reset)
        fit(nested_model(), [cb, watch], epochs=2)
        kept = all(np.array_equal(watch.at_change[k], watch.last[k]) is False and
                   watch.at_change[k].any() for k in watch.at_change)
        assert kept != reset


def test_plateau_unfreezes_the_next_block_when_the_metric_stalls():
    scores = iter([1.0, 0.9, 0.95, 0.97, 0.5, 0.6, 0.7, 0.8, 0.9])

    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["score"] = next(scores)

    cb = ProgressiveUnfreeze("plateau:patience=2,monitor=score")
    history = fit(nested_model(), [Score(), cb], epochs=9)
    # Stalls after epochs 3 (two epochs without beating 0.9) and 6 (stage 1's best is 0.5).
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0, 1, 1, 1, 2, 2]


def test_plateau_on_val_loss_restores_the_stages_best_weights():
    losses = iter([1.0, 0.5, 0.8, 0.9, 0.7])
    seen = {}

    class FakeValLoss(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            logs["loss"] = next(losses)

        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = values(self.model.get_layer("head").weights)

    model = nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = data(16)
    cb = ProgressiveUnfreeze("plateau", patience=2, restore_best_weights=True)
    history = model.fit(x, y, validation_data=(x, y), batch_size=8, epochs=5, verbose=0,
                        shuffle=False, callbacks=[FakeValLoss(), cb])
    assert history.history["unfreeze_stage"] == [0, 0, 0, 0, 1]
    # Epoch 3 stalled a second time: the weights of epoch 1 (val_loss 0.5) came back.
    for key, value in seen[1].items():
        np.testing.assert_array_equal(seen[3][key], value)


def test_plateau_warns_when_its_metric_never_shows_up():
    with pytest.warns(UserWarning, match="watches 'val_loss', which is not in the logs"):
        history = fit(nested_model(), [ProgressiveUnfreeze("plateau")], epochs=2)
    assert history.history["unfreeze_stage"] == [0, 0]


def test_evaluate_with_the_callback_changes_nothing():
    model = nested_model()
    model.compile(keras.optimizers.Adam(), "mse")
    x, y = data(8)
    model.evaluate(x, y, verbose=0, callbacks=[ProgressiveUnfreeze("plateau")])
    assert not model.get_layer("backbone").trainable


def test_flat_model_with_the_base_model_object():
    model, base = flat_model()
    snaps = Snapshots("block3_conv")
    fit(model, [ProgressiveUnfreeze({0: "none", 1: 1}, backbone=base), snaps], epochs=2)
    assert not snaps.moved_in(0)["block3_conv/kernel"]
    assert snaps.moved_in(1)["block3_conv/kernel"]


def test_flat_model_with_the_last_backbone_layer_name():
    model, _ = flat_model()
    cb = ProgressiveUnfreeze({0: "none", 1: "all"}, backbone="block3_pool")
    history = fit(model, [cb], epochs=2)
    assert cb.found.container is None and len(cb.found.layers) == 7
    assert history.history["unfrozen_blocks"] == [0, 3]
    assert model.get_layer("block1_conv").trainable and not model.get_layer("block1_bn").trainable


def test_model_from_build_model_is_found_with_its_spec_blocks(tmp_path):
    from keras_tlft import build_model

    model = build_model(tiny_spec(), 2, head="dense:2", weights=None)
    cb = ProgressiveUnfreeze({0: "none", 1: 1})
    history = fit(model, [cb], epochs=2, n=8)
    assert cb.found.name == "backbone" and cb.found.blocks_source == "build_model"
    assert cb.found.blocks_spec.key == "tests:tiny"
    assert [b.name for b in cb.found.blocks] == ["stem", "middle", "top"]
    assert history.history["unfrozen_blocks"] == [0, 1]
    # Reloaded from a .keras file the spec is gone, and tests:tiny is not registered: the
    # blocks are derived from the names (a registered architecture is recognised by structure,
    # tests/test_recognition.py).
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = keras.saving.load_model(path)
    cb = ProgressiveUnfreeze({0: "none"})
    fit(reloaded, [cb], epochs=1, n=8)
    assert cb.found.blocks_source == "derived"


@pytest.mark.parametrize("name", ["vgg16", "my_features"])
def test_blocks_come_from_the_registry_for_a_backbone_of_known_structure(name):
    model = vgg_like_model(name)  # laid out as VGG16, whatever its name
    cb = ProgressiveUnfreeze({0: "none", 1: 2})
    history = fit(model, [cb], epochs=2, n=8)
    assert cb.found.name == name
    assert cb.found.blocks_source == "structure"
    assert cb.found.blocks_spec.family == "vgg"
    assert [b.name for b in cb.found.blocks] == ["block1", "block2", "block3", "block4", "block5"]
    assert history.history["unfrozen_blocks"] == [0, 2]


def test_blocks_of_a_named_backbone_on_request():
    cb = ProgressiveUnfreeze({0: "none"}, blocks="vgg16")
    fit(vgg_like_model("backbone"), [cb], epochs=1, n=8)
    assert cb.found.blocks_source == "given" and len(cb.found.blocks) == 5
    with pytest.raises(ValueError, match="Block 'block4' has no start"):
        fit(nested_model(), [ProgressiveUnfreeze({0: "none"}, blocks="vgg16")], epochs=1)


def test_get_config_round_trips_as_json():
    cb = ProgressiveUnfreeze("gradual:every=2", backbone="backbone", verbose=1,
                             block_lr_decay=0.5, warmup_steps=10, blocks=[("a", "^a"), ("b", "^b")])
    config = json.loads(json.dumps(cb.get_config()))
    again = ProgressiveUnfreeze.from_config(config)
    assert again.get_config() == config
    assert again.schedule == cb.schedule and again.blocks == cb.blocks


def test_model_saved_mid_fine_tuning_reloads(tmp_path):
    path = str(tmp_path / "mid.keras")

    class Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.save(path)

    model = nested_model()
    fit(model, [ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"}), Save()], epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras: the optimizer's state is not loaded
        reloaded = keras.saving.load_model(path)
    x, _ = data(8)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert reloaded.get_layer("backbone").get_layer("block3_conv").trainable
    assert not reloaded.get_layer("backbone").get_layer("block2_conv").trainable
    history = fit(reloaded, [ProgressiveUnfreeze({0: "none", 1: 1, 2: "all"})], epochs=3)
    assert history.history["unfreeze_stage"] == [0, 1, 2]


def test_the_same_callback_can_fit_twice():
    model = nested_model()
    cb = ProgressiveUnfreeze({0: "none", 1: "all"})
    fit(model, [cb], epochs=2)
    history = fit(model, [cb], epochs=2)
    assert history.history["unfreeze_stage"] == [0, 1]


@pytest.mark.skipif(BACKEND == "torch", reason="PyTorch runs eagerly: nothing is traced")
def test_one_trace_per_stage():
    model = nested_model()
    traces = []
    train_step = model.train_step

    def counting_train_step(*args):
        traces.append(1)
        return train_step(*args)

    model.train_step = counting_train_step
    fit(model, [ProgressiveUnfreeze({0: "none", 2: 1, 4: "all"}, stage_change="retrace")],
        epochs=6)
    assert len(traces) == 3  # stage_change="mask" traces once (tests/test_unfreeze_masked.py)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = nested_model()
        snaps = Snapshots()
        fit(model, [ProgressiveUnfreeze({0: "none", 1: "all"}), snaps], epochs=2)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not snaps.moved_in(0)["block1_conv/kernel"]
    assert snaps.moved_in(1)["block1_conv/kernel"]


def test_jit_compile():
    if BACKEND == "torch" and not os.environ.get("KERAS_TLFT_SLOW_TESTS"):
        pytest.skip("torch.compile takes about 2 minutes on a 2-core CPU; set "
                    "KERAS_TLFT_SLOW_TESTS=1 to run it")
    snaps = Snapshots()
    fit(nested_model(), [ProgressiveUnfreeze({0: "none", 1: 1}), snaps], epochs=2,
        jit_compile=True)
    assert not snaps.moved_in(0)["block3_conv/kernel"]
    assert snaps.moved_in(1)["block3_conv/kernel"]


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"schedule": {-1: "none"}}, "Received: epoch=-1"),
        ({"schedule": {0: "half"}}, "Invalid unfreeze spec 'half'"),
        ({"schedule": {0: "none"}, "verbose": 3}, "Received: verbose=3"),
        ({"schedule": {0: "none"}, "backbone": 3}, "Received: backbone=3"),
        ({"schedule": {0: "none"}, "blocks": 5}, "Received: blocks=5"),
        ({"schedule": {0: "none"}, "block_lr_decay": 0}, "Received: block_lr_decay=0"),
    ],
)
def test_invalid_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError) as info:
        ProgressiveUnfreeze(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({0: "none", 1: "from:block3_cnv"}, "No layer named 'block3_cnv' in the backbone. "
                                            "Did you mean: block3_conv"),
        ({0: "none", 1: "from:12"}, "Layer index 12 is out of range: the backbone has 7 layers"),
        ({0: 5}, "Cannot unfreeze the top 5 blocks: this backbone has 3 blocks"),
    ],
)
def test_schedule_that_does_not_fit_the_backbone_fails_before_training(schedule, message):
    model = nested_model()
    before = values(model.weights)
    with pytest.raises(ValueError) as info:
        fit(model, [ProgressiveUnfreeze(schedule)], epochs=1)
    assert "Invalid schedule at epoch" in str(info.value) and message in str(info.value)
    assert not any(moved(before, values(model.weights)).values())


def test_model_without_a_findable_backbone_lists_the_candidates():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="first"),
                              keras.layers.Dense(1, name="second")])
    with pytest.raises(ValueError) as info:
        fit_dense(model, ProgressiveUnfreeze({0: "none"}))
    message = str(info.value)
    assert "Cannot find the backbone" in message and "first, second" in message
    assert "Received: backbone=None" in message


def fit_dense(model, cb):
    model.compile("adam", "mse")
    model.fit(np.zeros((4, 4)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=[cb])


def test_unknown_backbone_name_suggests_one():
    with pytest.raises(ValueError) as info:
        fit(nested_model(), [ProgressiveUnfreeze({0: "none"}, backbone="backbon")], epochs=1)
    assert "No layer named 'backbon'" in str(info.value)
    assert "Did you mean: backbone" in str(info.value)


def test_uncompiled_model_is_told_to_compile():
    model = nested_model()
    cb = ProgressiveUnfreeze({0: "none"})
    cb.set_model(model)
    with pytest.raises(ValueError, match="call model.compile"):
        cb.on_train_begin()


def _model_with_a_composite_block(seed=0):
    """A backbone whose second block is one layer holding a Conv2D and a BatchNormalization,
    as keras-hub's HGNetV2 and keras-cv's CSPDarkNet nest theirs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="block1_conv")(inputs)
    unit = keras.Sequential([keras.layers.Conv2D(4, 3, name="unit_conv"),
                             keras.layers.BatchNormalization(name="unit_bn")], name="block2_unit")
    x = keras.layers.GlobalAveragePooling2D(name="block2_pool")(unit(x))
    base = keras.Model(inputs, x, name="backbone")
    base.trainable = False
    outer = keras.Input((8, 8, 3))
    head = keras.Sequential([keras.layers.Dense(2, name="dense")], name="head")
    return keras.Model(outer, head(base(outer)))


@pytest.mark.parametrize("train_bn", [False, True])
def test_batchnorm_nested_inside_an_unfrozen_layer_follows_train_bn(train_bn):
    model = _model_with_a_composite_block()
    snaps = Snapshots()
    fit(model, [ProgressiveUnfreeze({0: "all"}, train_bn=train_bn), snaps], epochs=1)
    last = snaps.moved_in(0)
    unit = model.get_layer("backbone").get_layer("block2_unit")
    assert last[unit.get_layer("unit_conv").kernel.path]
    bn = unit.get_layer("unit_bn")
    assert bn.trainable is train_bn
    assert [last[v.path] for v in bn.weights] == [train_bn] * 4  # gamma, beta, mean, variance

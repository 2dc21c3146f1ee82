"""The presets from the literature (LP-FT, ULMFiT and its slanted triangular learning rates,
layer-wise learning-rate decay) and ``fine_tune``, on the current backend (test_backends.py
reruns this module on JAX and PyTorch)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers_unfreeze.tiny import SHAPE, data, moved, nested_model, values  # noqa: E402

import keras_tlft  # noqa: E402
from keras_tlft import ProgressiveUnfreeze, fine_tune  # noqa: E402
from keras_tlft.blocks import Block  # noqa: E402
from keras_tlft.lr_rules import SlantedTriangle  # noqa: E402
from keras_tlft.plan import plan_stages  # noqa: E402
from keras_tlft.presets import (  # noqa: E402
    COMMON_OPTIONS,
    layer_decay,
    lp_ft,
    preset_options,
    ulmfit,
)
from keras_tlft.schedule import Schedule  # noqa: E402
from keras_tlft.schedule_input import parse_schedule  # noqa: E402

# The tiny backbone's layers cut into its three blocks (input + block1, block2, block3).
BLOCKS = [("block1", "^input"), ("block2", "^block2_"), ("block3", "^block3_")]
HEAD_BIAS = "head/dense/bias"


def stlr(t, steps, lr_max, cut_frac=0.1, ratio=32):
    """Howard & Ruder (2018), eq. 3, as printed."""
    cut = math.floor(steps * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr_max * (1 + p * (ratio - 1)) / ratio


class StepSizes(keras.callbacks.Callback):
    """The largest change of each of some weights at every batch. Lion moves every weight by
    exactly the learning rate in force (lr * sign(...)), so these are the learning rates."""

    def __init__(self, keys):
        super().__init__()
        self.keys, self.sizes = keys, []

    def on_train_batch_begin(self, batch, logs=None):
        self.before = values(self.model.weights)

    def on_train_batch_end(self, batch, logs=None):
        after = values(self.model.weights)
        self.sizes.append([float(np.abs(after[k] - self.before[k]).max()) for k in self.keys])


# ---------------------------------------------------------------------- presets as data


@pytest.mark.parametrize("schedule", [
    lp_ft(), lp_ft(probe_epochs=3, learning_rate=None, warmup_steps=5), ulmfit(),
    ulmfit(every=2, cut_frac=0.2, ratio=10), layer_decay(), layer_decay(0.5, 1e-4),
])
def test_presets_round_trip_through_json(schedule, tmp_path):
    assert Schedule.from_json(json.loads(json.dumps(schedule.to_json()))) == schedule
    schedule.save(tmp_path / "s.json")
    assert Schedule.load(tmp_path / "s.json") == schedule
    assert parse_schedule(str(tmp_path / "s.json")) == schedule


def test_preset_strings_give_the_preset_functions_schedules():
    assert parse_schedule("ulmfit:every=2") == ulmfit(every=2)
    assert parse_schedule("lp_ft:probe_epochs=3,learning_rate=1e-4") == lp_ft(3, 1e-4)
    assert parse_schedule("layer_decay:decay=0.65") == layer_decay(decay=0.65)
    assert parse_schedule("gradual:stage_lr_shape=slanted_triangular,ratio=8").ratio == 8


def test_presets_mean_what_the_papers_say():
    s = ulmfit()
    assert (s.every, s.block_lr_decay, s.stage_lr_shape, s.cut_frac, s.ratio) == (
        1, 1 / 2.6, "slanted_triangular", 0.1, 32)
    assert [(st.epoch, str(st.unfreeze)) for st in s.resolve(3)] == [
        (0, "none"), (1, "1"), (2, "2"), (3, "all")]
    s = lp_ft(probe_epochs=4)
    assert [(st.epoch, str(st.unfreeze), st.learning_rate) for st in s.stages] == [
        (0, "none", None), (4, "all", 1e-5)]
    s = layer_decay()
    assert [(st.epoch, str(st.unfreeze)) for st in s.stages] == [(0, "all")]
    assert (s.backbone_lr_ratio, s.block_lr_decay) == (0.75, 0.75)


def test_preset_options_list_each_presets_options():
    assert preset_options("lp_ft") == ("probe_epochs", "learning_rate", *COMMON_OPTIONS)
    ulmfit_options = preset_options("ulmfit")
    assert ulmfit_options[:5] == ("every", "start", "max_blocks", "block_lr_decay",
                                  "stage_lr_shape")
    assert len(set(ulmfit_options)) == len(ulmfit_options)
    assert set(COMMON_OPTIONS) <= set(ulmfit_options)
    decay_options = preset_options("layer_decay")
    assert decay_options[:2] == ("decay", "learning_rate")
    assert not {"backbone_lr", "backbone_lr_ratio", "block_lr_decay"} & set(decay_options)


@pytest.mark.parametrize("make, fragment", [
    (lambda: parse_schedule({0: "all"}, stage_lr_shape="triangle"),
     "expected one of ('constant', 'slanted_triangular'). Received: stage_lr_shape='triangle'"),
    (lambda: ulmfit(cut_frac=1.0), "Invalid cut_frac: expected a number in (0, 1)"),
    (lambda: ulmfit(ratio=0.5), "Invalid ratio: expected a finite number >= 1"),
    (lambda: ulmfit(ratio=math.inf), "Received: ratio=inf"),
    (lambda: lp_ft(probe_epochs=0), "Invalid probe_epochs: expected an integer >= 1"),
    (lambda: layer_decay(decay=0), "Invalid decay: expected a number in (0, 1]"),
    (lambda: layer_decay(decay=1.5), "Received: decay=1.5"),
    (lambda: layer_decay(block_lr_decay=0.5),
     "block_lr_decay is set by decay (the top block trains at decay times the head's rate"),
    (lambda: parse_schedule("layer_decay:backbone_lr_ratio=0.1"),
     "unknown option 'backbone_lr_ratio'"),
    (lambda: parse_schedule("lp_ft:probe_epoch=3"), "(did you mean 'probe_epochs'?)"),
])
def test_bad_preset_arguments_are_clear_errors(make, fragment):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert fragment in str(info.value)
    assert "Received: " in str(info.value)


# ---------------------------------------------------------------------- slanted triangles


def test_slanted_triangle_is_the_papers_formula():
    for steps in (10, 40, 100):
        triangle = SlantedTriangle(start=7, steps=steps)
        for t in range(steps + 1):
            assert triangle.factor(7 + t) == pytest.approx(stlr(t, steps, 1.0), rel=1e-12)
    # Past its end a stage stays at the lowest rate; a stage too short to rise starts at the top.
    assert SlantedTriangle(0, 100).factor(250) == pytest.approx(1 / 32)
    assert SlantedTriangle(0, 5).factor(0) == 1.0


def test_slanted_triangular_rates_in_the_compiled_step_follow_the_formula():
    """Stage 0 (head only) is epoch 0, stage 1 (everything, backbone at half the head's rate)
    the last stage, so its triangle spans the rest of the fit: epochs 1 to 4, 40 steps."""
    lr, steps_per_epoch = 0.1, 10
    x, y = data(steps_per_epoch)
    model = nested_model()
    model.compile(keras.optimizers.Lion(lr), "mse")
    keys = [HEAD_BIAS, "block3_conv/bias"]
    sizes = StepSizes(keys)
    history = model.fit(x, y, batch_size=1, epochs=5, verbose=0, shuffle=False, callbacks=[
        ProgressiveUnfreeze({0: "none", 1: "all"}, stage_lr_shape="slanted_triangular",
                            backbone_lr_ratio=0.5), sizes])
    head = np.array(sizes.sizes)[:, 0]
    block = np.array(sizes.sizes)[:, 1]
    expected = [stlr(t, 10, lr) for t in range(10)] + [stlr(t, 40, lr) for t in range(40)]
    np.testing.assert_allclose(head, expected, rtol=2e-3)
    np.testing.assert_allclose(block[10:], np.array(expected[10:]) * 0.5, rtol=2e-3)
    assert block[:10].max() == 0.0
    # The logs hold the rates in force for the next step: t = 10, 20, 30, 40 of stage 1.
    np.testing.assert_allclose(history.history["head_lr"],
                               [lr / 32] + [stlr(t, 40, lr) for t in (10, 20, 30, 40)],
                               rtol=1e-5)
    np.testing.assert_allclose(history.history["backbone_lr"][1:],
                               [stlr(t, 40, lr / 2) for t in (10, 20, 30, 40)], rtol=1e-5)


def test_stage_lines_print_the_peak_rates_of_the_triangle(capsys):
    x, y = data(8)
    model = nested_model()
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[ProgressiveUnfreeze(
        {0: "none", 1: "all"}, stage_lr_shape="slanted_triangular", backbone_lr_ratio=0.5,
        verbose=1)])
    out = capsys.readouterr().out
    assert ("head lr 0.1, backbone lr 0.05 at the peak of the stage's slanted triangle"
            in out), out


def test_slanted_triangle_needs_the_number_of_steps():
    x, y = data(4)
    model = nested_model()
    model.compile(keras.optimizers.SGD(0.1), "mse")

    def batches():
        for i in range(0, 4, 2):
            yield x[i:i + 2], y[i:i + 2]

    with pytest.raises(ValueError) as info:
        model.fit(batches(), epochs=1, verbose=0, shuffle=False, callbacks=[
            ProgressiveUnfreeze({0: "all"}, stage_lr_shape="slanted_triangular")])
    assert "needs the number of steps per epoch" in str(info.value)
    assert "Received: epochs=1, steps=None" in str(info.value)


# ---------------------------------------------------------------------- per-block rates


def test_layer_decay_steps_each_block_at_decay_to_the_k_times_the_head_rate():
    x, y = data(1)
    model = nested_model()
    model.compile(keras.optimizers.Lion(0.1), "mse")
    keys = [HEAD_BIAS, "block3_conv/bias", "block2_conv/bias",
            "block1_conv/bias"]
    sizes = StepSizes(keys)
    history = model.fit(x, y, batch_size=1, epochs=1, verbose=0, callbacks=[
        ProgressiveUnfreeze("layer_decay:decay=0.5", blocks=BLOCKS), sizes])
    np.testing.assert_allclose(sizes.sizes[0], [0.1, 0.05, 0.025, 0.0125], rtol=1e-4)
    assert history.history["backbone_lr"] == pytest.approx([0.05])
    assert history.history["backbone_lr_min"] == pytest.approx([0.0125])


def test_ulmfit_plan_has_discriminative_peak_rates_and_says_slanted_triangular():
    from helpers_unfreeze.tiny import backbone

    base = backbone()
    base.trainable = False
    blocks = [Block("block1", 0, 3), Block("block2", 4, 4), Block("block3", 5, 6)]
    plan = plan_stages(base.layers, blocks, "ulmfit", epochs=4, learning_rate=1e-3)
    assert [p["unfreeze"] for p in plan] == ["none", "1", "2", "all"]
    rates = [r["learning_rate"] for r in plan[3]["learning_rates"]]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-3 / 2.6, 1e-3 / 2.6**2])
    assert "slanted triangular" in plan[0]["lr_shape"]
    assert plan_stages(base.layers, blocks, "lp_ft", epochs=8)[1]["lr_shape"] is None


def test_inspect_prints_the_plans_of_layer_decay_and_ulmfit(capsys):
    from keras_tlft.cli import main

    args = ["inspect", "vgg16", "--input-shape", "32,32,3", "--head", "gap", "--num-classes",
            "2", "--schedule", "layer_decay:decay=0.5", "--learning-rate", "1e-3", "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert len(plan) == 1 and plan[0]["unfreeze"] == "all"
    rates = [r["learning_rate"] for r in plan[0]["learning_rates"]]
    assert rates == pytest.approx([1e-3 * 0.5**k for k in range(len(rates))])
    table = [*args[:-4], "ulmfit:max_blocks=2", "--epochs", "4"]
    assert main(table) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich folds long lines
    assert "schedule plan" in out
    assert "learning rates: slanted triangular in each stage: from 1/32 of the rates shown" in out


# ---------------------------------------------------------------------- fine_tune


class WeightsByEpoch(keras.callbacks.Callback):
    """The backbone's weights at the end of each epoch, across the parts of a run."""

    def __init__(self):
        super().__init__()
        self.epochs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[epoch] = values(self.model.get_layer("backbone").weights)


@pytest.fixture
def spied_fit_frozen(monkeypatch):
    import keras_tlft.cache

    calls = []
    real = keras_tlft.cache.fit_frozen

    def spy(*args, **kwargs):
        calls.append(kwargs["epochs"])
        return real(*args, **kwargs)

    monkeypatch.setattr(keras_tlft.cache, "fit_frozen", spy)
    return calls


def compiled(model, lr=1e-2):
    model.compile(keras.optimizers.Adam(lr), "mse", metrics=["mae"])
    return model


def run_fine_tune(model, verbose=0, **kwargs):
    x, y = data(16)
    weights = WeightsByEpoch()
    start = values(model.get_layer("backbone").weights)
    history = fine_tune(model, x, y, batch_size=8, verbose=verbose, callbacks=[weights],
                        validation_data=data(8, seed=1), **kwargs)
    return history, start, weights.epochs


def test_fine_tune_trains_its_frozen_epoch_in_fit_then_the_backbone(spied_fit_frozen):
    history, start, by_epoch = run_fine_tune(compiled(nested_model()), epochs=3)
    assert spied_fit_frozen == []  # one frozen epoch: the fit's first stage, no feature pass
    assert history.epoch == [0, 1, 2]
    assert len(history.history["loss"]) == len(history.history["val_mae"]) == 3
    assert not any(moved(start, by_epoch[0]).values())
    # The default schedule (gradual): after the frozen epoch one more block every epoch, top
    # block first, the unfrozen blocks at 0.1x the head.
    first, second = moved(by_epoch[0], by_epoch[1]), moved(by_epoch[1], by_epoch[2])
    assert first["block3_conv/kernel"] and not first["block2_conv/kernel"]
    assert second["block2_conv/kernel"] and not second["block1_conv/kernel"]
    assert history.history["unfreeze_stage"] == [0, 1, 2]
    assert history.history["backbone_lr"][1:] == pytest.approx([1e-3, 1e-3])


def test_fine_tune_caches_two_frozen_epochs_then_trains_the_backbone(spied_fit_frozen):
    history, start, by_epoch = run_fine_tune(compiled(nested_model()), epochs=3,
                                             frozen_epochs=2)
    assert spied_fit_frozen == [2]  # one backbone pass for both frozen epochs
    assert history.epoch == [0, 1, 2]
    assert not any(moved(start, by_epoch[1]).values())
    assert moved(by_epoch[1], by_epoch[2])["block3_conv/kernel"]
    assert history.history["unfreeze_stage"] == [None, None, 1]


def test_fine_tune_runs_the_lp_ft_probe_on_cached_features(spied_fit_frozen):
    history, start, by_epoch = run_fine_tune(
        compiled(nested_model()), epochs=3, schedule="lp_ft:probe_epochs=2,learning_rate=1e-3")
    assert spied_fit_frozen == [2]
    assert history.epoch == [0, 1, 2]
    assert not any(moved(start, by_epoch[1]).values())
    assert moved(by_epoch[1], by_epoch[2])["block2_conv/kernel"]
    assert history.history["head_lr"] == [None, None, pytest.approx(1e-3)]


def test_fine_tune_trains_frozen_epochs_in_fit_when_caching_is_unsafe(spied_fit_frozen,
                                                                        capsys):
    keras.utils.set_random_seed(0)
    inner = nested_model()
    inputs = keras.Input(SHAPE)
    noisy = keras.layers.GaussianNoise(0.1)(inputs)  # random before the backbone: no cache
    model = compiled(keras.Model(inputs, inner.get_layer("head")(
        inner.get_layer("backbone")(noisy))))
    history, start, by_epoch = run_fine_tune(model, epochs=3, frozen_epochs=2, verbose=2)
    assert spied_fit_frozen == []
    assert ("fine_tune: frozen epochs 0-1 in model.fit, as caching would change the result: "
            "Cannot cache the backbone's features: layers before or inside the backbone draw "
            "random numbers") in " ".join(capsys.readouterr().out.split())
    assert history.epoch == [0, 1, 2] and history.history["unfreeze_stage"] == [0, 0, 1]
    assert not any(moved(start, by_epoch[1]).values())
    assert moved(by_epoch[1], by_epoch[2])["block3_conv/kernel"]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(epochs=1), "Expected epochs > frozen_epochs (or fit_frozen for a frozen run only). "
                     "Received: epochs=1, frozen_epochs=1"),
    (dict(epochs=4, schedule="lp_ft:probe_epochs=4"), "Received: epochs=4, frozen_epochs=4"),
    (dict(epochs=0), "Invalid epochs: expected an integer >= 1. Received: epochs=0"),
    (dict(epochs=5, frozen_epochs=-1), "Received: frozen_epochs=-1"),
    (dict(epochs=5, frozen_epochs=3, schedule="two_phase:frozen_epochs=2"),
     "unfreezes part of the backbone at epoch 2, during the frozen epochs: expected "
     "frozen_epochs <= 2"),
    (dict(epochs=5, schedule={0: "none"}), "never unfreezes the backbone"),
    (dict(epochs=5, verbose=3), "Invalid verbose: expected 'auto', 0, 1 or 2"),
    (dict(epochs=5, callbacks=[ProgressiveUnfreeze("gradual")]),
     "fine_tune makes its own ProgressiveUnfreeze from schedule="),
    (dict(epochs=5, callbacks=["csv"]), "expected keras.callbacks.Callback objects. "
                                        "Received: callbacks[0]='csv'"),
])
def test_fine_tune_refuses_bad_arguments_before_training(kwargs, fragment):
    x, y = data(4)
    model = compiled(nested_model())
    before = values(model.weights)
    with pytest.raises((ValueError, TypeError)) as info:
        fine_tune(model, x, y, **{"verbose": 0, **kwargs})
    assert fragment in str(info.value)
    assert not any(moved(before, values(model.weights)).values())


def test_fine_tune_refuses_an_uncompiled_model():
    x, y = data(4)
    with pytest.raises(ValueError, match="compile the model first") as info:
        fine_tune(nested_model(), x, y, epochs=2)
    assert "Received: model.compiled=False" in str(info.value)


def test_fine_tune_is_public_api():
    assert keras_tlft.fine_tune is fine_tune
    assert {"fine_tune", "lp_ft", "ulmfit", "layer_decay"} <= set(dir(keras_tlft))

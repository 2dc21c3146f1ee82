"""One default across the library: ProgressiveUnfreeze() without a schedule, the bare "gradual"
preset, fine_tune() and the CLI all use presets.default_schedule; the old rates stay one option
away; fine_tune(learning_rate="auto") trains at lr_find's suggestion."""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers_unfreeze.tiny import data, nested_model, values  # noqa: E402

import keras_tlft as tlft  # noqa: E402
from keras_tlft import presets, recipes  # noqa: E402
from keras_tlft.schedule_input import parse_schedule  # noqa: E402


def test_every_entry_point_has_the_same_default_schedule():
    default = presets.default_schedule()
    fine_tune_default, frozen = recipes._schedule_and_frozen_epochs(None, None)
    assert frozen == 1
    assert tlft.ProgressiveUnfreeze().schedule == default
    assert parse_schedule(presets.DEFAULT_PRESET) == default  # the CLI's --schedule gradual
    assert parse_schedule("gradual") == tlft.gradual() == default
    assert fine_tune_default == default
    assert default.backbone_lr_ratio == presets.DEFAULT_BACKBONE_LR_RATIO
    assert recipes.DEFAULT_BACKBONE_LR_RATIO == presets.DEFAULT_BACKBONE_LR_RATIO


def test_the_default_is_gradual_at_a_tenth_of_the_heads_rate():
    default = presets.default_schedule()
    assert presets.DEFAULT_BACKBONE_LR_RATIO == 0.1
    assert default.to_json() == {"trigger": "epoch", "every": 1, "backbone_lr_ratio": 0.1}


def test_keras_tlft_0_1_rates_are_one_option_away():
    assert tlft.ProgressiveUnfreeze(backbone_lr_ratio=1).schedule.backbone_lr_ratio == 1
    assert parse_schedule("gradual:backbone_lr_ratio=1").backbone_lr_ratio == 1
    assert tlft.gradual(backbone_lr_ratio=1) == tlft.Schedule(every=1)
    # An absolute backbone rate replaces the default ratio instead of clashing with it.
    for schedule in (tlft.gradual(backbone_lr=1e-4), parse_schedule("gradual:backbone_lr=1e-4"),
                     tlft.ProgressiveUnfreeze("gradual", backbone_lr=1e-4).schedule):
        assert (schedule.backbone_lr, schedule.backbone_lr_ratio) == (1e-4, 1.0)


def test_the_cli_prints_the_default_rates_for_the_bare_preset(capsys):
    import json

    from keras_tlft.cli import main

    main(["inspect", "vgg16", "--input-shape", "32,32,3", "--schedule", "gradual",
          "--epochs", "2", "--learning-rate", "0.001", "--json"])
    schedule = json.loads(capsys.readouterr().out)["schedule"]
    assert schedule["backbone_lr_ratio"] == presets.DEFAULT_BACKBONE_LR_RATIO


def compiled(lr=1e-2):
    model = nested_model()
    model.compile(keras.optimizers.Adam(lr), "mse")
    return model


def test_fine_tune_trains_exactly_as_fit_with_the_default_callback(capsys):
    x, y = data(32)
    runs = {}
    for how in ("fine_tune", "fit"):
        model = compiled()
        keras.utils.set_random_seed(1)
        if how == "fine_tune":
            history = tlft.fine_tune(model, x, y, epochs=4, batch_size=8, verbose=1)
        else:
            history = model.fit(x, y, epochs=4, batch_size=8, verbose=0,
                                callbacks=[tlft.ProgressiveUnfreeze()])
        runs[how] = (values(model.weights), history.history["unfreeze_stage"])
    # One frozen epoch runs in the fit, as the callback's own first stage: no feature pass.
    assert "fine_tune: frozen epoch 0 in model.fit" in capsys.readouterr().out
    (tuned, tuned_stages), (fitted, fitted_stages) = runs["fine_tune"], runs["fit"]
    assert tuned_stages == fitted_stages == [0, 1, 2, 3]
    assert tuned.keys() == fitted.keys()
    moved = [k for k in tuned if not np.array_equal(tuned[k], values(nested_model().weights)[k])]
    assert any(k.startswith("block") for k in moved)  # blocks trained, not the head alone
    for key in tuned:
        np.testing.assert_allclose(tuned[key], fitted[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_fine_tune_auto_learning_rate_is_lr_finds_suggestion(capsys):
    x, y = data(32)
    expected = tlft.lr_find(compiled(), x, y, batch_size=8).suggestions["head"]
    model = compiled()
    history = tlft.fine_tune(model, x, y, epochs=2, batch_size=8, learning_rate="auto",
                             verbose=1)
    assert expected is not None and expected != pytest.approx(1e-2)
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rate == pytest.approx(expected, rel=1e-5)
    assert history.history["head_lr"][1] == pytest.approx(expected, rel=1e-5)
    assert "fine_tune: learning_rate='auto': " in capsys.readouterr().out


@pytest.mark.parametrize("learning_rate, optimizer, fragment", [
    ("fast", "adam", "Invalid learning_rate: expected None (the optimizer's) or 'auto'"),
    ("auto", keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)),
     "the optimizer has a learning-rate schedule"),
])
def test_fine_tune_refuses_a_learning_rate_it_cannot_set(learning_rate, optimizer, fragment):
    x, y = data(8)
    model = nested_model()
    model.compile(optimizer, "mse")
    with pytest.raises(ValueError, match="learning") as info:
        tlft.fine_tune(model, x, y, epochs=2, learning_rate=learning_rate, verbose=0)
    assert fragment in str(info.value)

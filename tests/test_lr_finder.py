"""lr_find: the learning-rate range test, on tiny models (also run on JAX and PyTorch by
tests/test_recipes_backends.py)."""

from __future__ import annotations

import json
import math
import os
import warnings

import keras
import numpy as np
import pytest
from helpers_unfreeze import tiny

from keras_tlft import LRFinderResult, lr_find, plan_stages
from keras_tlft.lr_finder import smooth_losses

SCHEDULE = {0: "none", 1: 1, 2: "all"}


def _compiled(seed=0, optimizer=None):
    model = tiny.nested_model(seed=seed)
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse")
    return model


def _state(model):
    variables = {f"model/{i}": np.array(keras.ops.convert_to_numpy(v))
                 for i, v in enumerate(model.variables)}
    variables.update({f"optimizer/{v.path}": np.array(keras.ops.convert_to_numpy(v))
                      for v in model.optimizer.variables})
    return variables


def _flags(model):
    layers = [model, *model.layers, *model.get_layer("backbone").layers]
    return [(layer.name, layer.trainable) for layer in layers]


def _regression(n=64, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype("float32")
    y = (x @ rng.standard_normal((d, 1))).astype("float32")
    return x, y


def _linear_model(learning_rate=0.01):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(learning_rate), "mse")
    return model


def test_lr_find_leaves_weights_optimizer_state_and_flags_bitwise_as_they_were():
    model = _compiled()
    x, y = tiny.data(32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # the optimizer now has state
    before, flags, optimizer = _state(model), _flags(model), model.optimizer
    # train_bn: BatchNorm's moving statistics move during the stage tests, and come back too.
    lr_find(model, x, y, batch_size=8, steps=6, schedule=SCHEDULE, backbone="backbone")
    lr_find(model, x, y, batch_size=8, steps=6,
            schedule={"stages": {"0": "none", "1": "all"}, "train_bn": True})
    after = _state(model)
    assert model.optimizer is optimizer
    assert _flags(model) == flags
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed == []


def test_training_after_lr_find_is_the_training_without_it():
    x, y = tiny.data(32)
    probed, plain = _compiled(seed=1), _compiled(seed=1)
    lr_find(probed, x, y, batch_size=8, steps=5, schedule=SCHEDULE)
    for model in (probed, plain):
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for a, b in zip(probed.variables, plain.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b), err_msg=a.path)


def test_range_test_stops_when_the_smoothed_loss_diverges():
    x, y = _regression()
    result = lr_find(_linear_model(), x, y, batch_size=64, start_lr=1e-4, end_lr=1e4, steps=80)
    test = result.tests[0]
    assert test.diverged and len(test.losses) < 80
    finite = [s for s in test.smoothed[:-1] if math.isfinite(s)]
    last = test.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(finite)
    # The learning rates are exponentially spaced from start_lr.
    ratios = np.diff(np.log(test.learning_rates))
    np.testing.assert_allclose(ratios, math.log(1e8) / 79, rtol=1e-6)
    assert test.learning_rates[0] == pytest.approx(1e-4)


def test_suggested_learning_rate_trains_and_the_smallest_does_not():
    x, y = _regression()
    result = lr_find(_linear_model(), x, y, batch_size=64, start_lr=1e-5, end_lr=1e2,
                     steps=100)
    suggestion = result.suggestions["model"]
    test = result.tests[0]
    assert suggestion == test.minimum_tenth and test.steepest is not None
    # Plain SGD on this problem diverges above a learning rate of about 1.
    assert 1e-4 < suggestion < 1.0 and 1e-4 < test.steepest < 1.0

    def loss_after(learning_rate):
        model = _linear_model(learning_rate)
        model.fit(np.concatenate([x] * 20), np.concatenate([y] * 20), batch_size=64,
                  shuffle=False, verbose=0)  # 20 full-batch steps
        return float(model.evaluate(x, y, verbose=0))

    start = float(_linear_model().evaluate(x, y, verbose=0))
    assert loss_after(suggestion) < 0.2 * start
    assert loss_after(1e-5) > 0.9 * start


def test_smoothed_loss_is_fastais_debiased_moving_average():
    x, y = _regression()
    test = lr_find(_linear_model(), x, y, batch_size=16, steps=20, end_lr=1e-2).tests[0]
    assert test.smoothed == smooth_losses(test.losses, 0.98)
    assert test.smoothed[0] == pytest.approx(test.losses[0])  # debiased: no pull towards 0
    expected = 0.98 * 0.02 * test.losses[0] + 0.02 * test.losses[1]
    assert test.smoothed[1] == pytest.approx(expected / (1 - 0.98**2))


def test_each_stage_is_tested_with_its_blocks_trainable():
    model = _compiled()
    x, y = tiny.data(32)
    result = lr_find(model, x, y, batch_size=8, steps=4, schedule=SCHEDULE)
    backbone = model.get_layer("backbone")
    from keras_tlft.blocks import derive_blocks

    plan = plan_stages(backbone.layers, derive_blocks(backbone.layers), SCHEDULE,
                       container=backbone)
    head_params = model.get_layer("head").count_params()
    assert [t.name for t in result.tests] == ["head", "stage 1", "stage 2"]
    assert [t.blocks for t in result.tests] == [p["blocks"] for p in plan]
    assert [t.trainable_params for t in result.tests] == [
        p["trainable_params"] + head_params for p in plan]
    assert [t.unfreeze for t in result.tests] == ["none", "1", "all"]
    only = lr_find(model, x, y, batch_size=8, steps=4, schedule=SCHEDULE, stages=[2])
    assert [t.name for t in only.tests] == ["stage 2"]


def test_without_a_schedule_a_frozen_backbone_model_is_the_heads_test():
    x, y = tiny.data(32)
    result = lr_find(_compiled(), x, y, batch_size=8, steps=6)
    assert list(result.suggestions) == ["head"]


def test_result_is_one_json_document_and_the_plot_a_png_written_atomically(tmp_path):
    x, y = _regression()
    result = lr_find(_linear_model(), x, y, batch_size=64, start_lr=1e-3, end_lr=1e6, steps=40)
    doc = json.loads(json.dumps(result.to_json(), allow_nan=False))
    assert doc["suggestions"] == result.suggestions
    assert doc["tests"][0]["learning_rates"] == result.tests[0].learning_rates
    assert isinstance(result, LRFinderResult) and doc["steps"] == 40
    pytest.importorskip("matplotlib")
    path = tmp_path / "lr.png"
    assert result.plot(path) == os.fspath(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["lr.png"]
    (tmp_path / "plain").write_bytes(b"")  # the permissions a plain open() gives
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_array_free_data_and_a_learning_rate_schedule_optimizer():
    x, y = tiny.data(32)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)
    model = _compiled(optimizer=keras.optimizers.Adam(schedule))
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16])]  # repeated when exhausted
    result = lr_find(model, batches, steps=7)
    assert len(result.tests[0].losses) == 7
    assert model.optimizer.get_config()["learning_rate"]["class_name"] == "ExponentialDecay"


@pytest.mark.parametrize("kwargs, words", [
    ({"start_lr": 1.0, "end_lr": 0.1}, "end_lr must be larger than start_lr"),
    ({"steps": 1}, "steps must be an integer >= 2. Received: steps=1"),
    ({"start_lr": 0}, "start_lr must be a number > 0. Received: start_lr=0"),
    ({"diverge": 1}, "diverge must be a number > 1"),
    ({"stages": [0]}, "pass schedule= too. Received: schedule=None, stages=[0]"),
    ({"schedule": SCHEDULE, "stages": [3]}, "from 0 to 2 (this schedule has 3 stages)"),
])
def test_bad_arguments_name_the_fix(kwargs, words):
    x, y = tiny.data(8)
    with pytest.raises(ValueError) as info:
        lr_find(_compiled(), x, y, **kwargs)
    assert words in str(info.value) and "Received:" in str(info.value)


def test_uncompiled_model_is_refused_with_the_fix():
    x, y = tiny.data(8)
    with pytest.raises(ValueError, match=r"needs a compiled model: call model.compile"):
        lr_find(tiny.nested_model(), x, y)


def test_a_loss_scale_optimizer_is_copied_with_its_inner_optimizer():
    x, y = tiny.data(16)
    inner = keras.optimizers.SGD(1e-2, momentum=0.5)
    model = _compiled(optimizer=keras.optimizers.LossScaleOptimizer(inner))
    before = _state(model)
    result = lr_find(model, x, y, batch_size=8, steps=5)
    assert len(result.tests[0].losses) == 5
    assert model.optimizer.inner_optimizer is inner
    after = _state(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_range_test_that_would_memorise_its_few_samples_says_so():
    # 100 steps of 32 over 64 samples: 50 passes, where the suggestion measures memorisation
    # (the transfer matrix's 10-labels-per-class cells, whose suggestion ended at chance).
    model, (x, y) = _linear_model(), _regression(n=64)
    with pytest.warns(UserWarning, match=r"lr_find: 100 steps of 32 pass over the 64 samples "
                                         r"50 times, .* Expected at most 4 passes: more "
                                         r"samples, or steps <= 8, or a smaller batch_size"):
        lr_find(model, x, y, batch_size=32, steps=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lr_find(model, x, y, batch_size=32, steps=8)  # 4 passes
    assert not [w for w in caught if "lr_find" in str(w.message)]

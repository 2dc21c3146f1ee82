"""The optimizer mechanics under ProgressiveUnfreeze: one build for every variable a schedule can
unfreeze (keeping state), subsets, per-variable learning rates, state that survives a restart."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from keras_tlft.optim import LearningRateRule, StagedOptimizer, innermost_optimizer  # noqa: E402


def test_rule_scales_or_replaces_the_learning_rate():
    assert LearningRateRule(scale=0.1).value(1e-3, 0) == pytest.approx(1e-4)
    assert LearningRateRule(absolute=1e-5).value(1e-3, 0) == 1e-5
    assert LearningRateRule().is_identity and not LearningRateRule(scale=0.5).is_identity


def test_rule_warms_up_linearly_from_its_start():
    rule = LearningRateRule(scale=1.0, warmup_start=10, warmup_steps=4)
    assert [rule.value(1.0, it) for it in (9, 10, 11, 13, 14, 100)] == [
        0.0, 0.25, 0.5, 1.0, 1.0, 1.0]
    assert LearningRateRule(warmup_steps=4).value(1.0, 0) == 1.0  # no start: no ramp


def test_rule_tensor_matches_value():
    import keras

    rule = LearningRateRule(scale=0.5, warmup_start=2, warmup_steps=4)
    got = keras.ops.convert_to_numpy(rule.tensor(keras.ops.convert_to_tensor(0.1), 3))
    assert float(got) == pytest.approx(rule.value(0.1, 3))


def _head_trained_model(optimizer=None):
    import keras
    from helpers_unfreeze.tiny import data, nested_model

    model = nested_model()
    model.compile(optimizer or keras.optimizers.Adam(1e-2), "mse")
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model


def _union(model):
    backbone = model.get_layer("backbone")
    backbone.trainable = True
    variables = list(model.trainable_variables)
    backbone.trainable = False
    return variables


def test_build_for_more_variables_keeps_the_state_it_had():
    import keras
    from helpers_unfreeze.tiny import values

    model = _head_trained_model()
    optimizer = model.optimizer
    before = values(optimizer.variables)
    staged = StagedOptimizer.install(model)
    assert staged.build(_union(model))
    after = values(optimizer.variables)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    new = [p for p in after if p not in before]
    assert new and all("block" in p for p in new)
    assert all(not after[p].any() for p in new)
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 4


def test_build_is_idempotent():
    model = _head_trained_model()
    staged = StagedOptimizer.install(model)
    staged.build(_union(model))
    variables = list(model.optimizer.variables)
    assert StagedOptimizer.install(model) is staged
    assert not staged.build(_union(model))
    assert all(a is b for a, b in zip(variables, model.optimizer.variables))


def test_reset_state_zeroes_moments_but_keeps_iterations_and_state_variables():
    import keras

    model = _head_trained_model()
    staged = StagedOptimizer.install(model)
    staged.build(_union(model))
    marker = staged.state_variable("marker", (2,), "int32", 7)
    staged.reset_state()
    optimizer = model.optimizer
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 4
    slots = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert slots and not any(keras.ops.convert_to_numpy(v).any() for v in slots)
    assert optimizer.variables[-1] is marker
    assert keras.ops.convert_to_numpy(marker).tolist() == [7, 7]


def test_loss_scale_optimizer_wrapper_tracks_no_model_variables():
    import keras

    model = _head_trained_model(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()))
    staged = StagedOptimizer.install(model)
    staged.build(_union(model))
    assert staged.inner is innermost_optimizer(model.optimizer) is not model.optimizer
    model_paths = {v.path for v in model.variables}
    assert not model_paths & {v.path for v in model.optimizer.variables}
    assert len(model.optimizer._trainable_variables) == len(_union(model))


def test_state_variable_is_saved_with_the_weights(tmp_path):
    import keras
    from helpers_unfreeze.tiny import nested_model

    def prepared():
        model = nested_model()
        model.compile(keras.optimizers.Adam(), "mse")
        staged = StagedOptimizer.install(model)
        staged.build(_union(model))
        return model, staged.state_variable("tlft_test", (3,), "int32", -1)

    model, state = prepared()
    state.assign(np.array([1, 2, 3], dtype="int32"))
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    fresh, fresh_state = prepared()
    fresh.load_weights(path)
    assert keras.ops.convert_to_numpy(fresh_state).tolist() == [1, 2, 3]


def test_learning_rate_of_reports_the_rule():
    import keras

    model = _head_trained_model(keras.optimizers.SGD(0.1))
    staged = StagedOptimizer.install(model)
    head = model.get_layer("head").trainable_variables
    staged.set_rules([(head, LearningRateRule(scale=0.25))])
    assert staged.learning_rate_of(head[0]) == pytest.approx(0.025)
    other = model.get_layer("backbone").variables[0]
    assert staged.learning_rate_of(other) == pytest.approx(0.1)


OPTIMIZERS = {
    "SGD": lambda o: o.SGD(0.05, momentum=0.9, nesterov=True),
    "Adam": lambda o: o.Adam(0.01, amsgrad=True),
    "AdamW": lambda o: o.AdamW(0.01, weight_decay=0.1),
    "Nadam": lambda o: o.Nadam(0.01),
    "Adamax": lambda o: o.Adamax(0.01),
    "RMSprop": lambda o: o.RMSprop(0.01, momentum=0.5, centered=True),
    "Adagrad": lambda o: o.Adagrad(0.05),
    "Adadelta": lambda o: o.Adadelta(1.0),
    "Ftrl": lambda o: o.Ftrl(0.05),
    "Lion": lambda o: o.Lion(0.001),
    "Lamb": lambda o: o.Lamb(0.01),
    "Adafactor": lambda o: o.Adafactor(0.05),
    "Muon": lambda o: o.Muon(0.01),
    "schedule": lambda o: o.Adam(o.schedules.ExponentialDecay(0.01, 3, 0.5)),
    "LossScale": lambda o: o.LossScaleOptimizer(o.Adam(0.01)),
    "accumulation": lambda o: o.Adam(0.01, gradient_accumulation_steps=2),
    "clipnorm": lambda o: o.SGD(0.05, global_clipnorm=0.1),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_builtin_optimizer_trains_exactly_the_unfrozen_blocks(name):
    import keras
    from helpers_unfreeze.tiny import data, moved, nested_model, values

    from keras_tlft import ProgressiveUnfreeze

    model = nested_model()
    model.compile(OPTIMIZERS[name](keras.optimizers), "mse")
    backbone = model.get_layer("backbone")
    before = values(backbone.weights)
    x, y = data(16)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
        ProgressiveUnfreeze({0: "none", 1: 1}, backbone_lr_ratio=0.5, block_lr_decay=0.5,
                            warmup_steps=2)])
    changed = moved(before, values(backbone.weights))
    assert changed["block3_conv/kernel"] and changed["block3_conv/bias"]
    assert not any(changed[p] for p in changed if not p.startswith("block3"))

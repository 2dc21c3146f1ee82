"""FeatureDrift: per-block feature similarity to the pretrained features, on tiny models (also run
on JAX and PyTorch by tests/test_recipes_backends.py)."""

from __future__ import annotations

import csv
import warnings

import keras
import numpy as np
import pytest
from helpers_unfreeze import tiny

from keras_tlft import FeatureDrift, ProgressiveUnfreeze, build_model
from keras_tlft.drift import cosine_similarity, linear_cka

BLOCKS = ("block1", "block2", "block3")


def _backbone_values(model, name="backbone"):
    return tiny.values(model.get_layer(name).weights)


def _nested():
    return tiny.nested_model(), None


def _flat():
    model, base = tiny.flat_model()
    return model, base


def _sequential():
    keras.utils.set_random_seed(0)
    base = tiny.backbone()
    base.trainable = False
    model = keras.Sequential([keras.Input(tiny.SHAPE), keras.layers.Rescaling(2.0), base,
                              keras.layers.Dense(2)])
    return model, None


def _built():
    keras.utils.set_random_seed(0)
    # Augmentation before the backbone: random in training, the identity in inference.
    model = build_model(tiny.tiny_spec(), 2, head="dense:2", weights=None,
                        augmentation="default")
    return model, None


@pytest.mark.parametrize("make", [_nested, _flat, _sequential, _built],
                         ids=["nested", "flat", "sequential", "build_model"])
def test_frozen_backbone_keeps_every_block_exactly_at_similarity_one(make):
    model, base = make()
    model.compile(keras.optimizers.Adam(0.1), "mse")
    x, y = tiny.data(32)
    drift = FeatureDrift(x[:16], backbone=base, min_similarity=0.999)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="FeatureDrift")
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[drift])
    logged = drift.history
    assert history.history["drift_cos_min"] == [1.0, 1.0]
    assert len(drift.block_names) >= 2
    for name in drift.block_names:
        assert logged[f"drift_cos_{name}"] == [1.0, 1.0]
        assert logged[f"drift_cka_{name}"] == [1.0, 1.0]
    assert logged["drift_cos_min"] == [1.0, 1.0]


def test_large_learning_rate_moves_the_features_and_the_warning_fires():
    model = tiny.nested_model()
    model.compile(keras.optimizers.Adam(0.3), "mse")
    x, y = tiny.data(32)
    callbacks = [ProgressiveUnfreeze({0: "all"}), FeatureDrift(x[:16], min_similarity=0.9)]
    with pytest.warns(UserWarning, match=r"FeatureDrift: epoch \d: cos similarity to the "
                      r"pretrained features fell below 0.9 in .*block3"):
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    logged = callbacks[1].history
    assert all(v < 0.9 for v in logged["drift_cos_block3"])
    assert all(v < 1.0 for v in logged["drift_cka_block3"])
    assert logged["drift_cos_min"] == [min(logged[f"drift_cos_{b}"][i] for b in BLOCKS)
                                       for i in range(2)]
    assert "drift_rollback" not in logged  # only logged when rolling back


def test_rollback_puts_the_backbone_back_to_the_start_of_the_stage_in_any_callback_order():
    model = tiny.nested_model()
    model.compile(keras.optimizers.Adam(0.3), "mse")
    x, y = tiny.data(32)
    pretrained, head = _backbone_values(model), tiny.values(model.get_layer("head").weights)
    # Listed before ProgressiveUnfreeze: it sees the stage's flags only at the epoch's end.
    callbacks = [FeatureDrift(x[:16], min_similarity=0.9, on_drift="rollback"),
                 ProgressiveUnfreeze({0: "none", 2: "all"})]
    with pytest.warns(UserWarning, match="rolled back to the start of this stage"):
        history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=callbacks)
    assert history.history["drift_rollback"] == [0, 0, 1]
    logged = callbacks[0].history
    assert logged["drift_rollback"] == [0, 0, 1]
    assert logged["drift_cos_block3"][:2] == [1.0, 1.0] and logged["drift_cos_block3"][2] < 0.9
    after = _backbone_values(model)
    assert all(np.array_equal(pretrained[k], after[k]) for k in pretrained)
    # The head is not rolled back: it trained in every epoch.
    assert all(tiny.moved(head, tiny.values(model.get_layer("head").weights)).values())


def test_drift_keys_reach_csv_logger_listed_after(tmp_path):
    model = tiny.nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = tiny.data(16)
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=1, batch_size=8, verbose=0,
              callbacks=[FeatureDrift(x[:8], cka=False, log_blocks=True),
                         keras.callbacks.CSVLogger(str(path))])
    with open(path) as f:
        row = next(csv.DictReader(f))
    assert float(row["drift_cos_block1"]) == 1.0 and "drift_cka_block1" not in row


def test_the_epoch_line_shows_only_the_drift_summaries(capsys):
    model = tiny.nested_model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    x, y = tiny.data(16)
    drift = FeatureDrift(x[:8])
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=2, callbacks=[drift])
    line = capsys.readouterr().out
    assert "drift_cos_min" in line and "drift_cka_min" in line and "drift_cos_block" not in line
    assert {k for k in history.history if k.startswith("drift_")} == {"drift_cos_min",
                                                                       "drift_cka_min"}
    assert set(drift.history) == {f"drift_{m}_{b}" for m in ("cos", "cka")
                                  for b in (*BLOCKS, "min")}


def test_cka_ignores_a_rotation_and_scaling_of_the_features_cosine_does_not():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((32, 6))
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    moved = 3.0 * features @ rotation
    assert linear_cka(features, moved) == pytest.approx(1.0, abs=1e-12)
    assert cosine_similarity(features, moved) < 0.9
    assert linear_cka(features, rng.standard_normal((32, 6))) < 0.6
    # Collapsed features (the same for every sample) keep none of the structure.
    assert linear_cka(features, np.ones((32, 6))) == 0.0
    assert cosine_similarity(features, features.copy()) == 1.0
    assert cosine_similarity(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0


@pytest.mark.parametrize("kwargs, words", [
    ({"min_similarity": 1.5}, "min_similarity must be None or a number in [0, 1]"),
    ({"on_drift": "undo"}, "on_drift must be one of ('warn', 'rollback')"),
    ({"measure": "cka", "cka": False}, "measure='cka' needs cka=True"),
    ({"measure": "l2"}, "measure must be one of ('cos', 'cka')"),
    ({"backbone": 3}, "backbone must be None, a layer name or a Keras layer"),
])
def test_bad_arguments_name_the_fix(kwargs, words):
    x, _ = tiny.data(4)
    with pytest.raises(ValueError) as info:
        FeatureDrift(x, **kwargs)
    assert words in str(info.value) and "Received:" in str(info.value)


def test_config_is_plain_json():
    import json

    x, _ = tiny.data(4)
    drift = FeatureDrift(x, blocks=[("stem", "^input"), ("top", "^block3_")],
                         min_similarity=0.5, on_drift="rollback")
    config = json.loads(json.dumps(drift.get_config()))
    assert config["blocks"] == [["stem", "^input", False], ["top", "^block3_", False]]
    assert config["on_drift"] == "rollback" and config["min_similarity"] == 0.5


def test_missing_probe_is_refused():
    with pytest.raises(ValueError, match=r"probe must be a batch of model inputs"):
        FeatureDrift(None)

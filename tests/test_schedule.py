"""Schedules as plain data: forms, presets, JSON files, validation, and the stage-by-stage plan."""

from __future__ import annotations

import json

import pytest

from keras_tlft.blocks import Block
from keras_tlft.schedule import (
    Schedule,
    Stage,
    fine_tune_at,
    gradual,
    learning_rate_rules,
    parse_schedule,
    plan_stages,
    plateau,
    stage_at_epoch,
    two_phase,
)


def test_mapping_of_epochs_becomes_sorted_stages_from_epoch_0():
    schedule = parse_schedule({8: "all", 0: "none", 4: 2})
    assert [(s.epoch, str(s.unfreeze)) for s in schedule.stages] == [
        (0, "none"), (4, "2"), (8, "all")]


def test_json_keys_are_epochs_too():
    assert parse_schedule({"0": "none", "3": "from:block2_conv"}).stages[1].epoch == 3


def test_schedule_without_epoch_0_is_frozen_until_its_first_stage():
    stages = parse_schedule({3: "all"}).resolve(n_blocks=3)
    assert [(s.epoch, str(s.unfreeze)) for s in stages] == [(0, "none"), (3, "all")]


def test_json_round_trip_keeps_every_field(tmp_path):
    stages = [Stage("none", 0), Stage(1, 2), Stage("all", 5, learning_rate=1e-5)]
    schedule = parse_schedule(stages, backbone_lr_ratio=0.1, block_lr_decay=1 / 2.6,
                              warmup_steps=10, train_bn=True, reset_optimizer_state=True)
    path = tmp_path / "schedule.json"
    schedule.save(path)
    data = json.loads(path.read_text())
    assert data["stages"][1] == {"epoch": 2, "unfreeze": 1}
    assert Schedule.load(path) == schedule
    assert parse_schedule(str(path)) == schedule
    assert parse_schedule(schedule.to_json()) == schedule


def test_stage_learning_rate_is_kept_in_json():
    schedule = two_phase(frozen_epochs=3, learning_rate=1e-5)
    assert schedule.to_json()["stages"][1] == {"epoch": 3, "unfreeze": "all", "learning_rate": 1e-5}
    assert parse_schedule(schedule.to_json()) == schedule


def test_plateau_schedule_round_trips_as_a_list_of_states():
    schedule = parse_schedule(["none", 1, "all"], trigger="plateau", patience=1)
    assert schedule.to_json() == {"trigger": "plateau", "stages": ["none", 1, "all"],
                                  "patience": 1}
    assert parse_schedule(schedule.to_json()) == schedule


@pytest.mark.parametrize(
    "text, expected",
    [
        ("two_phase", two_phase()),
        ("two-phase:frozen_epochs=3,learning_rate=2e-5", two_phase(3, 2e-5)),
        ("fine_tune_at:layer=100,epoch=5", fine_tune_at(100, epoch=5)),
        ("fine_tune_at:layer=block5_conv1", fine_tune_at("block5_conv1")),
        ("gradual:every=2", gradual(every=2)),
        ("plateau:patience=3,monitor=val_accuracy", plateau(3, "val_accuracy")),
    ],
)
def test_preset_strings(text, expected):
    assert parse_schedule(text) == expected


def test_presets_accept_schedule_options():
    schedule = parse_schedule("gradual:every=2", block_lr_decay=0.5)
    assert schedule.every == 2 and schedule.block_lr_decay == 0.5


def test_two_phase_trains_everything_at_the_low_rate_after_the_frozen_epochs():
    stages = two_phase(frozen_epochs=4, learning_rate=1e-5).resolve(5)
    assert [(s.epoch, str(s.unfreeze), s.learning_rate) for s in stages] == [
        (0, "none", None), (4, "all", 1e-5)]


def test_gradual_adds_one_block_every_k_epochs_until_all():
    stages = gradual(every=2).resolve(n_blocks=3)
    assert [(s.epoch, str(s.unfreeze)) for s in stages] == [
        (0, "none"), (2, "1"), (4, "2"), (6, "all")]


def test_gradual_from_epoch_0_and_capped():
    stages = gradual(every=1, start=0, max_blocks=2).resolve(n_blocks=5)
    assert [(s.epoch, str(s.unfreeze)) for s in stages] == [(0, "1"), (1, "2")]


def test_plateau_preset_walks_the_blocks():
    stages = plateau().resolve(n_blocks=3)
    assert [str(s.unfreeze) for s in stages] == ["none", "1", "2", "all"]
    assert all(s.epoch is None for s in stages)


def test_stage_at_epoch():
    stages = parse_schedule({0: "none", 4: 2, 8: "all"}).resolve(3)
    assert [stage_at_epoch(stages, e) for e in (0, 3, 4, 7, 8, 20)] == [0, 0, 1, 1, 2, 2]


def test_learning_rate_rules_decay_from_the_top_block():
    schedule = parse_schedule({0: "all"}, backbone_lr_ratio=0.1, block_lr_decay=0.5)
    head, blocks = learning_rate_rules(schedule, schedule.stages[0], n_blocks=3)
    assert head.value(1e-3, 0) == 1e-3
    assert [r.value(1e-3, 0) for r in blocks] == pytest.approx([2.5e-5, 5e-5, 1e-4])


def test_absolute_backbone_rate_ignores_the_head_rate():
    schedule = parse_schedule({0: "all"}, backbone_lr=1e-5)
    _, blocks = learning_rate_rules(schedule, schedule.stages[0], n_blocks=2)
    assert [r.value(0.1, 0) for r in blocks] == [1e-5, 1e-5]


def test_stage_learning_rate_sets_head_and_backbone():
    schedule = two_phase(learning_rate=1e-5, backbone_lr_ratio=0.5)
    head, blocks = learning_rate_rules(schedule, schedule.stages[1], n_blocks=1)
    assert head.value(1e-3, 0) == 1e-5
    assert blocks[0].value(1e-3, 0) == 5e-6


def test_fingerprint_changes_with_the_schedule():
    a = parse_schedule({0: "none", 4: "all"})
    assert a.fingerprint() == parse_schedule({"0": "none", "4": "all"}).fingerprint()
    assert a.fingerprint() != parse_schedule({0: "none", 5: "all"}).fingerprint()


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "schedule, message",
    [
        ({-1: "none"}, "integers >= 0"),
        ({"-2": "all"}, "Received: epoch=-2"),
        ({0: "some"}, "Invalid unfreeze spec 'some'"),
        ({0: -3}, "cannot be negative"),
        ({0: "from:"}, "Invalid unfreeze spec"),
        ([{"epoch": 1, "unfreeze": 1}, {"epoch": 1, "unfreeze": 2}], "same epoch"),
        ("no_such_preset", "Unknown schedule 'no_such_preset'"),
        ("gradual:every", "expected key=value"),
        ("gradual:whatever=1", "Invalid arguments for preset 'gradual'"),
        ("missing.json", "does not exist"),
        (3.5, "Invalid schedule"),
        ({"stages": {0: "none"}, "epochs": 4}, "Unknown schedule field(s) ['epochs']"),
    ],
)
def test_invalid_schedules_name_the_fix(schedule, message):
    with pytest.raises(ValueError) as info:
        parse_schedule(schedule)
    assert message in str(info.value)
    assert "Received" in str(info.value) or "Unknown" in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"backbone_lr_ratio": 0}, "Received: backbone_lr_ratio=0"),
        ({"block_lr_decay": 2.6}, "in (0, 1]"),
        ({"warmup_steps": -1}, "Received: warmup_steps=-1"),
        ({"warmup_steps": 2.5}, "an integer"),
        ({"patience": -1}, "Received: patience=-1"),
        ({"mode": "up"}, "Received: mode='up'"),
        ({"trigger": "loss"}, "Received: trigger='loss'"),
        ({"train_bn": "yes"}, "Received: train_bn='yes'"),
        ({"backbone_lr": 1e-5, "backbone_lr_ratio": 0.1}, "set one of them"),
        ({"every": 2}, "cannot be combined with explicit stages"),
    ],
)
def test_invalid_options_name_the_argument(options, message):
    with pytest.raises(ValueError) as info:
        parse_schedule({0: "none", 2: "all"}, **options)
    assert message in str(info.value)


def test_plateau_stages_take_no_epochs():
    with pytest.raises(ValueError, match="take no epoch"):
        parse_schedule({0: "none", 3: "all"}, trigger="plateau")


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="Unknown option"):
        parse_schedule({0: "none"}, learning_rate=1e-3)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        parse_schedule(str(path))


# ---------------------------------------------------------------------- the plan


@pytest.fixture
def tiny_backbone():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers_unfreeze.tiny import backbone

    model = backbone()
    model.trainable = False
    blocks = [Block("block1", 0, 3), Block("block2", 4, 4), Block("block3", 5, 6)]
    return model, blocks


def test_plan_lists_stages_blocks_params_and_rates(tiny_backbone):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, {0: "none", 2: 1, 4: "all"}, epochs=6,
                       learning_rate=1e-3, container=model)
    assert [(p["start_epoch"], p["end_epoch"], p["unfreeze"]) for p in plan] == [
        (0, 2, "none"), (2, 4, "1"), (4, 6, "all")]
    assert plan[0]["blocks"] == [] and plan[0]["trainable_params"] == 0
    assert plan[1]["blocks"] == ["block3"] and plan[1]["trainable_params"] == 4 * 4 + 4
    # BatchNorm stays frozen by default: block1 counts its conv only.
    conv1 = 3 * 3 * 3 * 4 + 4
    conv2 = 3 * 3 * 4 * 4 + 4
    assert plan[2]["trainable_params"] == conv1 + conv2 + 20
    assert plan[2]["new_blocks"] == ["block1", "block2"]
    assert [r["name"] for r in plan[2]["learning_rates"]] == ["head", "block3", "block2", "block1"]
    assert plan[2]["learning_rates"][1]["learning_rate"] == 1e-3
    json.dumps(plan)


def test_plan_counts_batchnorm_with_train_bn(tiny_backbone):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, parse_schedule({0: "all"}, train_bn=True),
                       container=model)
    assert plan[0]["trainable_params"] == model.count_params() - 8  # moving mean and variance


def test_plan_puts_trainable_flags_back(tiny_backbone):
    model, blocks = tiny_backbone
    plan_stages(model.layers, blocks, {0: "all"}, container=model)
    assert not model.trainable and not any(layer.trainable for layer in model.layers)


def test_plan_drops_stages_after_the_last_epoch(tiny_backbone):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, gradual(every=2), epochs=3, container=model)
    assert [p["unfreeze"] for p in plan] == ["none", "1"]
    assert plan[-1]["end_epoch"] == 3


def test_plan_of_a_plateau_schedule(tiny_backbone):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, "plateau:patience=2", container=model)
    assert [p["unfreeze"] for p in plan] == ["none", "1", "2", "all"]
    assert plan[1]["trigger"] == "val_loss has not improved for 2 epochs"
    assert plan[1]["start_epoch"] is None
    assert plan[1]["learning_rates"][1]["lr_scale"] == 1.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("from:block9_conv", "No layer named 'block9_conv' in the backbone. Did you mean"),
        ("from:40", "Layer index 40 is out of range"),
        (4, "Cannot unfreeze the top 4 blocks"),
    ],
)
def test_plan_rejects_stages_that_do_not_fit_the_backbone(tiny_backbone, spec, message):
    model, blocks = tiny_backbone
    with pytest.raises(ValueError) as info:
        plan_stages(model.layers, blocks, {0: "none", 3: spec}, container=model)
    assert str(info.value).startswith("Invalid schedule at epoch 3")
    assert message in str(info.value)

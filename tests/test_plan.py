"""The plan of a schedule on a backbone: stages, blocks, parameter counts and rates."""

from __future__ import annotations

import json

import pytest

from keras_tlft.blocks import Block
from keras_tlft.plan import learning_rate_rules, plan_stages, stage_at_epoch
from keras_tlft.schedule import gradual, parse_schedule, two_phase


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


def test_plan_of_a_plateau_schedule_names_its_maximum_epochs_and_best_scope(tiny_backbone):
    model, blocks = tiny_backbone
    schedule = "plateau:patience=1,max_stage_epochs=3,best_scope=run"
    plan = plan_stages(model.layers, blocks, schedule, container=model)
    assert plan[0]["trigger"] == "start"
    assert plan[1]["trigger"] == ("val_loss has not improved on the run's best for 1 epoch, "
                                  "or after 3 epochs of the stage before")


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


@pytest.mark.parametrize("schedule, where, refrozen", [
    ({0: 2, 2: 1}, "epoch 2 (unfreeze=1)", "blocks block2"),
    ({0: "all", 2: "none"}, "epoch 2 (unfreeze='none')", "blocks block1, block2, block3"),
    (["none", 2, 1], "stage 2 (unfreeze=1)", "blocks block2"),
])
def test_plan_refuses_a_schedule_that_freezes_blocks_again(tiny_backbone, schedule, where,
                                                          refrozen):
    model, blocks = tiny_backbone
    if isinstance(schedule, list):
        schedule = parse_schedule(schedule, trigger="plateau")
    with pytest.raises(ValueError) as info:
        plan_stages(model.layers, blocks, schedule, container=model)
    message = str(info.value)
    assert message.startswith(f"Invalid schedule at {where}: it freezes again what the stage "
                              "before trained")
    assert refrozen in message and "allow_refreeze=True" in message
    assert "finetuning-scheduler" in message and "Received: schedule=" in message


def test_plan_names_the_blocks_frozen_again_with_allow_refreeze(tiny_backbone):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, parse_schedule({0: 2, 2: 1}, allow_refreeze=True),
                       container=model)
    assert [p["refrozen_blocks"] for p in plan] == [[], ["block2"]]


@pytest.mark.parametrize("preset", ["two_phase", "fine_tune_at:layer=4", "gradual",
                                    "plateau", "lp_ft", "ulmfit", "layer_decay"])
def test_no_preset_freezes_blocks_again(tiny_backbone, preset):
    model, blocks = tiny_backbone
    plan = plan_stages(model.layers, blocks, preset, container=model)
    assert all(p["refrozen_blocks"] == [] for p in plan)

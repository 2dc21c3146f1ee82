"""Schedules as plain data: forms, presets, JSON files, validation."""

from __future__ import annotations

import json

import pytest

from keras_tlft.schedule import (
    Schedule,
    Stage,
    fine_tune_at,
    gradual,
    parse_schedule,
    plateau,
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


def test_plateau_maximum_epochs_and_best_scope_round_trip():
    schedule = parse_schedule("plateau:patience=1,max_stage_epochs=3,best_scope=run")
    assert schedule == plateau(1, max_stage_epochs=3, best_scope="run")
    assert schedule.to_json() == {"trigger": "plateau", "patience": 1, "max_stage_epochs": 3,
                                  "best_scope": "run"}
    assert parse_schedule(schedule.to_json()) == schedule
    # A resumed run with other values is another schedule: its stage records start afresh.
    assert schedule.fingerprint() != plateau(1, max_stage_epochs=3).fingerprint()


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
        ({"max_stage_epochs": 3}, "max_stage_epochs is for plateau schedules"),
        ({"best_scope": "epoch"}, "expected one of ('stage', 'run'). Received: best_scope='epoch'"),
    ],
)
def test_invalid_options_name_the_argument(options, message):
    with pytest.raises(ValueError) as info:
        parse_schedule({0: "none", 2: "all"}, **options)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_plateau_maximum_epochs_is_an_integer_of_at_least_1(value):
    with pytest.raises(ValueError, match=f"expected an integer >= 1 or None. Received: "
                                         f"max_stage_epochs={value}"):
        plateau(max_stage_epochs=value)


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


def test_allow_refreeze_is_a_schedule_option_kept_in_json_and_the_callback_config(tmp_path):
    from keras_tlft import ProgressiveUnfreeze

    schedule = parse_schedule({0: 2, 2: 1}, allow_refreeze=True)
    assert schedule.to_json()["allow_refreeze"] is True
    assert "allow_refreeze" not in parse_schedule({0: 2, 2: 1}).to_json()  # the default
    schedule.save(tmp_path / "s.json")
    assert Schedule.load(tmp_path / "s.json").allow_refreeze is True
    config = ProgressiveUnfreeze({0: "all", 2: "none"}, allow_refreeze=True).get_config()
    assert config["schedule"]["allow_refreeze"] is True
    assert ProgressiveUnfreeze.from_config(config).schedule.allow_refreeze is True
    # A different schedule: a resumed run notices it.
    assert schedule.fingerprint() != parse_schedule({0: 2, 2: 1}).fingerprint()


def test_allow_refreeze_must_be_a_bool():
    with pytest.raises(ValueError, match=r"Invalid allow_refreeze: expected True or False. "
                                         r"Received: allow_refreeze='yes'"):
        parse_schedule({0: 2, 2: 1}, allow_refreeze="yes")

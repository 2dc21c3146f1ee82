"""Bad schedules are refused with a message naming the fix, in Python, preset strings and JSON
files alike (issues #11 and #15)."""

from __future__ import annotations

import json
import math

import pytest

from keras_tlft.schedule import (
    COMMON_OPTIONS,
    PRESETS,
    Schedule,
    Stage,
    gradual,
    parse_schedule,
    plateau,
    preset_options,
    two_phase,
)

# ---------------------------------------------------------------------- keys and files


def test_mixed_epoch_and_name_keys_are_refused_with_the_keys():
    with pytest.raises(ValueError) as info:
        parse_schedule({0: "none", "later": 2})
    message = str(info.value)
    assert "mix epochs and other names" in message
    assert "Received: keys=[0, 'later'] (not epochs: ['later'])" in message


def test_duplicate_keys_in_a_json_schedule_are_refused(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text('{"stages": {"0": "none", "4": 2, "4": "all"}}')
    with pytest.raises(ValueError) as info:
        parse_schedule(str(path))
    assert "gives the key '4' twice" in str(info.value)
    assert f"Received: path={str(path)!r}" in str(info.value)


def test_duplicate_field_in_a_json_schedule_is_refused(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text('{"trigger": "plateau", "patience": 2, "patience": 5}')
    with pytest.raises(ValueError, match="gives the key 'patience' twice"):
        Schedule.load(path)


@pytest.mark.parametrize("name", ["my_schedule.txt", "schedules/warmup", "conf/plan.yaml"])
def test_missing_schedule_file_without_json_suffix_is_reported_as_missing(name, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        parse_schedule(name)
    assert f"Schedule file {name!r} does not exist" in str(info.value)
    assert f"Received: schedule={name!r}" in str(info.value)


def test_existing_schedule_file_without_json_suffix_loads(tmp_path):
    path = tmp_path / "plan.txt"
    path.write_text(json.dumps({"0": "none", "3": "all"}))
    assert [s.epoch for s in parse_schedule(str(path)).stages] == [0, 3]


def test_misspelt_preset_name_suggests_the_preset():
    with pytest.raises(ValueError, match="Did you mean: gradual"):
        parse_schedule("gradul")


# ---------------------------------------------------------------------- preset options


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("two_phase:epochs=2", "unknown option 'epochs' (did you mean 'frozen_epochs'?)"),
        ("gradual:evry=2", "unknown option 'evry' (did you mean 'every'?)"),
        ("plateau:patiense=3", "unknown option 'patiense' (did you mean 'patience'?)"),
        ("fine_tune_at:layer=10,epcoh=3", "unknown option 'epcoh' (did you mean 'epoch'?)"),
    ],
)
def test_preset_option_typos_name_the_valid_options(text, fragment):
    name = text.partition(":")[0]
    with pytest.raises(ValueError) as info:
        parse_schedule(text)
    message = str(info.value)
    assert fragment in message
    assert "expected some of " + ", ".join(preset_options(name)) in message
    assert f"Received: schedule={text!r}" in message
    assert "__init__" not in message and "unexpected keyword" not in message


def test_preset_function_with_a_typo_is_a_type_error_naming_the_options():
    with pytest.raises(TypeError) as info:
        two_phase(epochs=2)
    assert "unknown option 'epochs' (did you mean 'frozen_epochs'?)" in str(info.value)
    assert "Received: epochs=2" in str(info.value)


def test_every_preset_accepts_its_options_and_the_common_ones():
    assert preset_options("two_phase") == ("frozen_epochs", "learning_rate", *COMMON_OPTIONS)
    assert preset_options("plateau")[:6] == ("patience", "monitor", "max_blocks", "mode",
                                             "min_delta", "restore_best_weights")
    assert plateau(mode="max", min_delta=0.1).min_delta == 0.1
    assert gradual(every=2, warmup_steps=10).warmup_steps == 10
    for name in PRESETS:  # the common options less those the preset sets itself
        fixed = set(getattr(PRESETS[name], "fixed_options", ()))
        assert set(COMMON_OPTIONS) - fixed <= set(preset_options(name))


def test_epoch_preset_refuses_plateau_options():
    with pytest.raises(ValueError, match="unknown option 'patience'"):
        parse_schedule("gradual:patience=3")


def test_docs_list_every_option_of_every_preset():
    from pathlib import Path

    guide = (Path(__file__).parent.parent / "docs" / "schedules.md").read_text()
    section = guide[guide.index("## Presets"):]
    section = section[:section.index("\n## ")]
    for name in PRESETS:
        assert f"`{name}`" in section
        for option in preset_options(name):
            assert f"`{option}" in section, (name, option)


# ---------------------------------------------------------------------- empty schedules


@pytest.mark.parametrize("schedule", [{}, [], {"stages": []}, {"stages": {}}])
def test_empty_schedule_is_refused(schedule):
    with pytest.raises(ValueError) as info:
        parse_schedule(schedule)
    assert "no stages" in str(info.value) or "'stages' are empty" in str(info.value)
    assert "'gradual'" in str(info.value) and "Received: schedule=" in str(info.value)


def test_empty_json_schedule_file_is_refused(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="it has no stages"):
        parse_schedule(str(path))


def test_generated_schedules_still_round_trip_through_json(tmp_path):
    for schedule in (gradual(), gradual(every=2), plateau()):
        path = tmp_path / "s.json"
        schedule.save(path)
        assert Schedule.load(path) == schedule


# ---------------------------------------------------------------------- numbers

BAD_NUMBERS = [
    ("backbone_lr", -1e-3), ("backbone_lr", math.nan), ("backbone_lr", math.inf),
    ("backbone_lr", 0.0), ("backbone_lr_ratio", math.nan), ("warmup_steps", -5),
    ("warmup_steps", 1.5), ("min_delta", math.nan), ("min_delta", -0.1),
    ("patience", 0), ("patience", -1), ("block_lr_decay", math.nan),
]


@pytest.mark.parametrize("name, value", BAD_NUMBERS)
def test_bad_numbers_are_refused_in_python(name, value):
    with pytest.raises(ValueError) as info:
        parse_schedule({0: "none", 2: "all"} if name != "patience" else "plateau",
                       **{name: value})
    assert f"Received: {name}={value!r}" in str(info.value)


@pytest.mark.parametrize("name, value", BAD_NUMBERS)
def test_bad_numbers_are_refused_in_json_files(name, value, tmp_path):
    data = {"stages": {"0": "none", "2": "all"}, name: value}
    if name == "patience":
        data = {"trigger": "plateau", name: value}
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(data))  # json writes NaN and Infinity, as Python reads them
    with pytest.raises(ValueError) as info:
        parse_schedule(str(path))
    assert f"Received: {name}={value!r}" in str(info.value)


@pytest.mark.parametrize(
    "text, received",
    [
        ("gradual:every=0", "every=0"),
        ("gradual:every=-2", "every=-2"),
        ("gradual:every=1.5", "every=1.5"),
        ("gradual:every=NaN", "every=nan"),
        ("plateau:patience=0", "patience=0"),
        ("plateau:patience=Infinity", "patience=inf"),
        ("two_phase:learning_rate=-1", "learning_rate=-1"),
        ("two_phase:learning_rate=NaN", "learning_rate=nan"),
        ("two_phase:learning_rate=nan", "learning_rate='nan'"),
        ("two_phase:frozen_epochs=0", "frozen_epochs=0"),
        ("fine_tune_at:layer=3,learning_rate=Infinity", "learning_rate=inf"),
        ("gradual:warmup_steps=-1", "warmup_steps=-1"),
        ("gradual:backbone_lr=0", "backbone_lr=0"),
    ],
)
def test_bad_numbers_are_refused_in_preset_strings(text, received):
    with pytest.raises(ValueError) as info:
        parse_schedule(text)
    assert f"Received: {received}" in str(info.value)


@pytest.mark.parametrize("value", [-1e-3, 0.0, math.nan, math.inf, "1e-3"])
def test_bad_stage_learning_rate_is_refused(value):
    with pytest.raises(ValueError, match="expected a finite number > 0"):
        Stage("all", 2, value)
    with pytest.raises(ValueError, match="Received: learning_rate="):
        parse_schedule([{"epoch": 0, "unfreeze": "none"},
                        {"epoch": 2, "unfreeze": "all", "learning_rate": value}])


def test_plan_refuses_a_bad_learning_rate_or_epoch_count():
    from keras_tlft.plan import plan_stages

    with pytest.raises(ValueError, match="Received: learning_rate=nan"):
        plan_stages([], [], "gradual", learning_rate=math.nan)
    with pytest.raises(ValueError, match="Received: epochs=0"):
        plan_stages([], [], "gradual", epochs=0)

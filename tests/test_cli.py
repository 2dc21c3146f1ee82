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

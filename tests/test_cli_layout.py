"""The CLI at the edges of a terminal: 80 columns, pipes, a reader that goes away, control
characters from untrusted files and plugins, plugin problems said once in our words, --help."""

import argparse
import io
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
from rich.console import Console

from keras_tlft import plugins, registry
from keras_tlft.cli import main, make_parser
from keras_tlft.cli.listing import _render_plugins_table, cmd_list

PY = sys.executable
ESC = "\x1b"


def run_cli(*args, env=None, **kwargs):
    return subprocess.run([PY, "-m", "keras_tlft", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


def assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide[:3]


def words(text: str) -> set[str]:
    return {w.strip("│┃ ") for line in text.splitlines() for w in line.split()}


# --- 13: a reader that goes away ------------------------------------------------------------


def test_list_into_a_closed_pipe_exits_quietly_with_141():
    proc = subprocess.Popen([PY, "-m", "keras_tlft", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "80"})
    proc.stdout.close()  # as `| head -1` does once it has its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "BrokenPipe" not in err and "Traceback" not in err and "error" not in err


# --- 16: control characters from untrusted files and plugins ---------------------------------


def test_inspect_layers_of_a_keras_file_with_escape_sequences_in_names(tmp_path, capsys):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, name="title\x1b]0;pwned\x07_a")(inputs)
    x = keras.layers.Conv2D(2, 3, name="clear\x1b[2J\x1b[H_b")(x)
    path = tmp_path / "ansi.keras"
    keras.Model(inputs, x).save(path)
    assert main(["inspect", str(path), "--layers"]) == 0
    captured = capsys.readouterr()
    assert ESC not in captured.out and "\x07" not in captured.out and ESC not in captured.err
    assert "title_a" in captured.out and "clear_b" in captured.out


BROKEN = "raise ImportError('needs \\x1b]0;pwned\\x07\\x1b[2Jlibfoo')\n"
BADSIG = """
from keras_tlft import hookimpl

@hookimpl
def register_backbones(x, y):
    pass
"""
HEAVY = "import tlft_fake_heavy  # stands for tensorflow\n"


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    modules = {"tlft_broken": BROKEN, "tlft_badsig": BADSIG, "tlft_slow": HEAVY,
               "tlft_fake_heavy": ""}
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [EntryPoint(name.removeprefix("tlft_"), name, plugins.ENTRY_POINT_GROUP)
           for name in ("tlft_broken", "tlft_badsig", "tlft_slow")]
    monkeypatch.setattr(plugins, "_entry_points", lambda: eps)
    monkeypatch.setattr(plugins, "HEAVY_MODULES", ("tlft_fake_heavy",))
    monkeypatch.setattr(registry, "_REGISTRY", None)
    yield
    for name in modules:
        sys.modules.pop(name, None)
    monkeypatch.setattr(registry, "_REGISTRY", None)


def test_plugin_text_reaches_the_terminal_without_control_characters(fake_plugins, capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert ESC not in out and "\x07" not in out
    assert "needs libfoo" in " ".join(out.split())


# --- 17, 18: plugin problems, once and in our words ------------------------------------------


def test_a_plugin_failure_is_one_line_of_ours_not_a_python_warning(fake_plugins, capsys):
    assert main(["list", "--json"]) == 0
    err = capsys.readouterr().err
    assert "UserWarning" not in err and "_REGISTRY" not in err
    lines = [line for line in err.splitlines() if "'broken'" in line]
    assert len(lines) == 1
    assert lines[0].startswith("warning: keras-tlft plugin 'broken': failed to load: ImportError")
    assert "`keras-tlft plugins`" in lines[0] and "KERAS_TLFT_STRICT_PLUGINS=1" in lines[0]


def test_the_python_api_warns_once_per_failure_at_the_callers_line(fake_plugins):
    with pytest.warns(registry.PluginWarning) as caught:
        registry.get_registry()
    broken = [w for w in caught if "'broken'" in str(w.message)]
    assert len(broken) == 1 and broken[0].filename == __file__
    assert ESC not in str(broken[0].message) and "needs libfoo" in str(broken[0].message)


def test_a_hook_with_the_wrong_arguments_is_explained(fake_plugins):
    with pytest.warns(registry.PluginWarning):
        reg = registry.get_registry()
    reasons = {f.plugin: f.reason for f in reg.failures}
    assert reasons["badsig"].startswith(
        "hook register_backbones takes (register), plugin 'badsig' declares (x, y)")
    assert "badsig" not in {p.name for p in reg.plugins}  # not left half-registered


def test_a_plugin_pulling_in_a_heavy_module_is_noted_and_strict_mode_raises(
        fake_plugins, monkeypatch, capsys):
    assert main(["plugins"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "slow: imports tlft_fake_heavy at import time" in out
    for name in ("tlft_slow", "tlft_fake_heavy"):  # imported afresh
        sys.modules.pop(name, None)
    monkeypatch.setenv(plugins.STRICT_ENV, "1")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [
        EntryPoint("slow", "tlft_slow", plugins.ENTRY_POINT_GROUP)])
    with pytest.raises(RuntimeError, match="plugin 'slow' imports tlft_fake_heavy"):
        plugins.make_plugin_manager()


# --- 19: 80 columns, in a terminal and in a pipe ---------------------------------------------


def test_list_in_an_80_column_pipe_keeps_every_name_whole():
    names = [row["name"] for row in json.loads(run_cli("list", "--json").stdout)]
    proc = run_cli("list", env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert_fits(proc.stdout)
    firsts = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert firsts == names
    assert "left out to fit 80 columns: family" in " ".join(proc.stderr.split())


def test_list_in_an_80_column_terminal_keeps_every_name_whole():
    out = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    args = argparse.Namespace(source=None, pattern=None, offline_weights=False, json=False)
    assert cmd_list(args, out) == 0
    text = out.file.getvalue()
    assert_fits(text)
    assert "…" not in text
    assert {s.name for s in registry.list_backbones()} <= words(text)


def test_plugin_names_are_never_cut_in_a_narrow_terminal():
    rows = [{"name": "a_plugin_with_a_long_name_users_type", "distribution": "keras-tlft-long",
             "version": "1.0.0", "backbones": 3, "hooks": ["register_backbones"]}]
    out = Console(file=io.StringIO(), width=56, force_terminal=True, color_system=None)
    _render_plugins_table(rows, out)
    text = out.file.getvalue()
    assert "a_plugin_with_a_long_name_users_type" in text and "…" not in text
    assert_fits(text, 56)


def test_inspect_layer_names_stay_whole_in_an_80_column_pipe(monkeypatch, capsys):
    import keras

    monkeypatch.setenv("COLUMNS", "80")
    args = ["inspect", "mobilenet_v2", "--input-shape", "96,96,3", "--layers", "--unfreeze", "2"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    keras.backend.clear_session()  # the same auto-generated layer names again
    assert main(args) == 0
    text = capsys.readouterr().out
    assert_fits(text)
    assert {row["name"] for row in doc["layer_table"]} <= words(text)
    assert {b["first_layer_name"] for b in doc["blocks"]} <= words(text)


def test_a_plateau_plan_says_its_trigger_once(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["inspect", "mobilenet_v2", "--input-shape", "96,96,3", "--head", "gap",
                 "--num-classes", "10", "--schedule", "plateau"]) == 0
    text = capsys.readouterr().out
    assert_fits(text)
    assert " ".join(text.split()).count("has not improved for") == 1
    assert len(text.splitlines()) < 80  # 20 stages, one line each


def test_lr_find_table_fits_an_80_column_pipe_with_its_suggestions(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    args = ["lr-find", "vgg16", "--input-shape", "32,32,3", "--steps", "4", "--batch-size", "2",
            "--schedule", "two_phase"]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    assert_fits(text)
    assert "steepest" in text and "minimum/10" in text  # the suggestions are kept
    for test in doc["tests"]:
        assert test["name"] in text and test["unfreeze"] in text


# --- 20: --help ------------------------------------------------------------------------------


def _verbs():
    parser = make_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("verb", sorted(_verbs()))
def test_every_verbs_help_ends_with_examples_and_fits_80_columns(verb, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = _verbs()[verb].format_help()
    assert_fits(text)
    tail = text.rstrip().split("\n\n")[-1].splitlines()
    assert tail[0] == "examples:" and tail[1].startswith(f"  keras-tlft {verb}")

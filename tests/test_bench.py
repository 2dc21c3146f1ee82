import json
import os
import subprocess
import sys

import keras
import pytest

from keras_tlft import BackboneSpec, BlockRule
from keras_tlft.bench import run_bench


def tiny(input_shape, weights, include_top):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, name="s1_conv")(inputs)
    x = keras.layers.Conv2D(8, 3, name="s2_conv")(x)
    return keras.Model(inputs, x)


TINY = BackboneSpec(name="tiny", builder=tiny, source="test", default_input_shape=(16, 16, 3),
                    blocks=(BlockRule("s1", "^s1_"), BlockRule("s2", "^s2_")))


def test_phases_train_more_parameters_as_they_unfreeze():
    report = run_bench(TINY, batch_size=2, steps=3, warmup_steps=1, jit_compile=False)
    assert [p.phase for p in report.phases] == ["frozen", "partial", "full", "inference"]
    frozen, partial, full, _ = (p.trainable_params for p in report.phases)
    head = 8 * 10 + 10
    assert frozen == head
    assert partial == head + 3 * 3 * 4 * 8 + 8
    assert full == head + 3 * 3 * 3 * 4 + 4 + 3 * 3 * 4 * 8 + 8 == report.total_params
    for p in report.phases:
        assert p.steps == 3 and p.images_per_second > 0
        assert p.step_ms_p10 <= p.step_ms_median <= p.step_ms_p90
    assert report.phases[0].stage_change_seconds is None
    assert report.phases[1].stage_change_seconds is not None


def test_ctrl_c_keeps_the_phases_finished_so_far():
    def interrupt(phase, step, total):
        if phase == "partial":
            raise KeyboardInterrupt

    report = run_bench(TINY, batch_size=2, steps=2, warmup_steps=1, jit_compile=False,
                       on_step=interrupt)
    assert report.interrupted
    assert [p.phase for p in report.phases] == ["frozen"]


@pytest.mark.parametrize(
    "kwargs, words",
    [({"phases": ["frozen", "warm"]}, "Unknown phase(s) ['warm']"),
     ({"steps": 0}, "steps must be an integer >= 1"),
     ({"partial": "half"}, "Invalid partial spec 'half'")],
)
def test_bad_settings_are_refused(kwargs, words):
    with pytest.raises(ValueError) as info:
        run_bench(TINY, **kwargs)
    assert words in str(info.value)


def test_cli_bench_json_parses_and_says_what_it_measured_on():
    proc = subprocess.run(
        [sys.executable, "-m", "keras_tlft", "bench", "mobilenet_v2", "--image-size", "32",
         "--batch-size", "2", "--steps", "2", "--warmup-steps", "1",
         "--phases", "frozen,partial,inference", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert doc["backbone"] == "applications:mobilenet_v2"
    assert doc["device"].startswith(("CPU", "GPU"))
    assert [p["phase"] for p in doc["phases"]] == ["frozen", "partial", "inference"]
    assert doc["phases"][1]["trainable_params"] > doc["phases"][0]["trainable_params"]
    assert doc["jit_requested"] == "auto"  # model.compile's default, not XLA forced on
    assert doc["jit_compile"] is _auto_jit_resolves_to()


def _auto_jit_resolves_to() -> bool:
    """What a plain ``model.compile()`` picks on this machine (XLA off on a TensorFlow CPU)."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return bool(model.jit_compile)


def test_bench_defaults_to_what_model_compile_does_and_says_so():
    report = run_bench(TINY, batch_size=2, steps=2, warmup_steps=1, phases=["frozen"])
    assert report.jit_requested == "auto"
    assert report.jit_compile is _auto_jit_resolves_to()


def test_bench_applies_jit_to_inference_alone():
    report = run_bench(TINY, batch_size=2, steps=2, warmup_steps=1, phases=["inference"],
                       jit_compile=False)
    assert report.jit_requested == "off" and report.jit_compile is False


@pytest.mark.parametrize("argv, jit", [([], "auto"), (["--no-jit"], "off"), (["--jit"], "on"),
                                       (["--jit", "both"], "both")])
def test_cli_bench_jit_option(argv, jit):
    from keras_tlft.cli import make_parser

    assert make_parser().parse_args(["bench", "vgg16", *argv]).jit == jit


def _tiny_bench(monkeypatch):
    import keras_tlft.bench as bench

    real = bench.run_bench
    monkeypatch.setattr(bench, "run_bench", lambda name, **kw: real(
        TINY, **{**kw, "batch_size": 2, "steps": 2, "warmup_steps": 1}))


def test_cli_bench_jit_both_json_has_one_run_without_and_one_with_xla(monkeypatch, capsys):
    from keras_tlft.cli import main

    _tiny_bench(monkeypatch)
    assert main(["bench", "vgg16", "--jit", "both", "--phases", "frozen,inference",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["jit"] == "both"
    assert [r["jit_requested"] for r in doc["runs"]] == ["off", "on"]
    assert [r["jit_compile"] for r in doc["runs"]] == [False, True]
    assert [p["phase"] for p in doc["runs"][1]["phases"]] == ["frozen", "inference"]


def test_cli_bench_jit_both_shows_both_side_by_side(monkeypatch):
    import io

    from rich.console import Console

    from keras_tlft.cli.bench import _render_bench_both

    off, on = (run_bench(TINY, batch_size=2, steps=2, warmup_steps=1, phases=["frozen"],
                         jit_compile=jit) for jit in (False, True))
    out = Console(file=io.StringIO(), width=80, highlight=False)
    _render_bench_both(off, on, out)
    text = out.file.getvalue()
    assert "without and with XLA" in text
    speedup = off.phases[0].step_ms_median / on.phases[0].step_ms_median
    assert f"{off.phases[0].step_ms_median:.1f}" in text and f"{speedup:.2f}x" in text


def test_cli_bench_unknown_backbone_exits_2(capsys):
    from keras_tlft.cli import main

    assert main(["bench", "tiny-unknown"]) == 2
    assert "Unknown backbone" in capsys.readouterr().err


def test_cli_bench_bad_phase_exits_2_and_names_the_phases(capsys):
    from keras_tlft.cli import main

    assert main(["bench", "vgg16", "--phases", "frozen,warm"]) == 2
    err = capsys.readouterr().err
    assert "Unknown phase(s) warm: expected some of frozen, partial, full, inference." in err
    assert "Received: --phases='frozen,warm'" in err


def test_bench_table_fits_an_80_column_pipe_with_the_figures_it_shows_whole():
    import io

    from rich.console import Console

    from keras_tlft.cli import _render_bench

    report = run_bench(TINY, batch_size=2, steps=2, warmup_steps=1, jit_compile=False,
                       partial="from:s2_conv")
    out = Console(file=io.StringIO(), width=80, highlight=False)
    _render_bench(report, out)
    text = out.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    for p in report.phases:
        assert f"{p.step_ms_median:.1f}" in text and f"{p.images_per_second:.1f}" in text
    assert "from:s2_conv" in text and "…" not in text
    # What does not fit is named, not cut: the spread goes first.
    assert "left out to fit 80 columns: p10-p90" in " ".join(text.split())

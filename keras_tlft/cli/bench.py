"""``keras-tlft bench``: rendering of :mod:`keras_tlft.bench`'s measurements."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape

from keras_tlft.cli._common import (
    EXIT_OK,
    UsageError,
    _fmt_int,
    _print_json,
    _quiet_tensorflow,
    check_batch_memory,
    check_steps,
    make_console,
    print_rows,
)

# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args, out: Console) -> int:
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.blocks import parse_unfreeze
    from keras_tlft.reporting.bench import (
        PHASES,  # plain data: the module imports Keras only when run
    )

    get_backbone(args.name)
    parse_unfreeze(args.partial, "--partial")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if bad := [p for p in phases if p not in PHASES]:
        raise UsageError(f"Unknown phase(s) {', '.join(bad)}: expected some of "
                         f"{', '.join(PHASES)}. Received: --phases={args.phases!r}")
    if not phases:
        raise UsageError(f"No phase to measure: expected a comma-separated list of some of "
                         f"{', '.join(PHASES)}. Received: --phases={args.phases!r}")
    if twice := sorted({p for p in phases if phases.count(p) > 1}):
        raise UsageError(f"--phases names {', '.join(twice)} twice: each phase is measured "
                         f"once; list it once. Received: --phases={args.phases!r}")
    for option in ("--steps", "--warmup-steps"):
        check_steps(option, getattr(args, option[2:].replace("-", "_")))
    _check_bench_sizes(args)
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
            raise UsageError(f"Keras is already loaded; set KERAS_BACKEND={args.backend} instead.")
        os.environ["KERAS_BACKEND"] = args.backend
    _quiet_tensorflow()
    from keras_tlft.reporting.bench import device_name, run_bench

    device, on_gpu = device_name()
    batch = args.batch_size or (32 if on_gpu else 8)
    _check_bench_sizes(args, batch)
    steps = args.steps or (50 if on_gpu else 10)
    err = make_console(stderr=True)
    if not on_gpu and not args.json:
        err.print(f"[yellow]No GPU: measuring on {escape(device)} with small defaults "
                  f"(batch {batch}, {steps} steps).[/yellow]")
    kwargs = dict(batch_size=batch, image_size=args.image_size, steps=steps,
                  warmup_steps=args.warmup_steps, mixed_precision=args.mixed_precision,
                  phases=phases, partial=args.partial)
    reports = []
    for jit in JIT_RUNS[args.jit]:
        reports.append(_run_with_progress(args, err, phases, jit, kwargs, run_bench))
        if reports[-1].interrupted:
            break
    if args.json:
        docs = [r.to_dict() for r in reports]
        _print_json({"jit": "both", "runs": docs} if args.jit == "both" else docs[0])
    elif len(reports) == 2:
        _render_bench_both(*reports, out)
    else:
        _render_bench(reports[0], out)
    if reports[-1].interrupted:
        err.print("[yellow]interrupted: the phases finished so far are shown[/yellow]")
        return 130
    return EXIT_OK


def _check_bench_sizes(args, batch: int | None = None) -> None:
    """An image size and a batch that can fit, before Keras builds anything (the batch's
    default, 8 on a CPU and 32 on a GPU, is checked again once the device is known)."""
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.assembly import MAX_SIDE

    spec = get_backbone(args.name)
    size = args.image_size or spec.default_input_shape[0]
    if size > MAX_SIDE:
        raise UsageError(f"--image-size must be at most {MAX_SIDE:,} pixels: larger images do "
                         f"not fit in memory. Received: --image-size={size}")
    batch = batch or args.batch_size or 8
    option, received = "--batch-size", f"--batch-size={batch}"
    if args.image_size is not None:
        option, received = "--image-size or --batch-size", f"--image-size={size}, {received}"
    shape = (size, size, spec.default_input_shape[2])
    # The synthetic batch is drawn as float64, then cast: 3 float32 batches' worth.
    check_batch_memory(option, batch, shape, data_batches=3, received=received)


#: ``--jit`` -> the ``jit_compile`` value(s) measured, in order.
JIT_RUNS = {"auto": ("auto",), "on": (True,), "off": (False,), "both": (False, True)}


def _run_with_progress(args, err: Console, phases, jit, kwargs, run_bench):
    if args.json:
        return run_bench(args.name, jit_compile=jit, **kwargs)
    from rich.progress import Progress

    label = {"auto": "", True: " (XLA)", False: " (no XLA)"}[jit] if args.jit == "both" else ""
    with Progress(console=err, transient=True) as progress:
        tasks = {p: progress.add_task(p + label, total=None) for p in phases}

        def on_step(phase, step, total):
            progress.update(tasks[phase], completed=step, total=total)

        return run_bench(args.name, jit_compile=jit, on_step=on_step, **kwargs)


def _jit_words(r) -> str:
    used = "XLA" if r.jit_compile else "no XLA"
    return f"{used} (jit auto)" if r.jit_requested == "auto" else used


def _render_bench(r, out: Console) -> None:
    mp = "mixed precision" if r.mixed_precision else "float32"
    out.print(f"[bold]{escape(r.backbone)}[/bold] on {escape(r.device)}, backend {r.backend}: "
              f"batch "
              f"{r.batch_size}, {r.image_size}x{r.image_size}, {r.steps} steps after "
              f"{r.warmup_steps} warm-up, {mp}, {_jit_words(r)}")
    rows = [{
        "phase": p.phase, "unfreeze": escape(p.unfreeze or "-"),
        "trainable": _fmt_int(p.trainable_params), "ms/step": f"{p.step_ms_median:.1f}",
        "p10-p90": f"{p.step_ms_p10:.1f}-{p.step_ms_p90:.1f}",
        "img/s": f"{p.images_per_second:.1f}",
        "peak MiB": f"{p.peak_memory_mb:.0f}" if p.peak_memory_mb is not None else "-",
        "trace s": f"{p.trace_seconds:.2f}",
        "change s": (f"{p.stage_change_seconds:.3f}"
                     if p.stage_change_seconds is not None else "-"),
    } for p in r.phases]
    # The unfreeze spec is typed back (--partial); the spread and the trace time go first.
    columns = ["phase", "unfreeze", "trainable", "ms/step", "p10-p90", "img/s", "peak MiB",
               "trace s", "change s"]
    print_rows(out, rows, columns, ["p10-p90", "trace s", "peak MiB", "trainable"],
               right=("trainable", "ms/step", "p10-p90", "img/s", "peak MiB", "trace s",
                      "change s"))
    out.print(f"[dim]ms/step: median, p10-p90 its spread; memory: {r.memory_kind}; trace s: "
              f"warm-up time beyond the median step (trace/compile); change s: the callback's "
              f"own work at the stage change[/dim]")


def _render_bench_both(off, on, out: Console) -> None:
    """``--jit both``: the same phases without and with XLA, side by side."""
    mp = "mixed precision" if off.mixed_precision else "float32"
    out.print(f"[bold]{escape(off.backbone)}[/bold] on {escape(off.device)}, backend "
              f"{off.backend}: batch {off.batch_size}, {off.image_size}x{off.image_size}, "
              f"{off.steps} steps after {off.warmup_steps} warm-up, {mp}, without and with XLA")
    with_xla = {p.phase: p for p in on.phases}
    rows = []
    for p in off.phases:
        q = with_xla.get(p.phase)
        rows.append({
            "phase": p.phase, "unfreeze": escape(p.unfreeze or "-"),
            "ms/step": f"{p.step_ms_median:.1f}",
            "ms/step XLA": f"{q.step_ms_median:.1f}" if q else "-",
            "XLA speed-up": f"{p.step_ms_median / q.step_ms_median:.2f}x" if q else "-",
            "trace s": f"{p.trace_seconds:.2f}",
            "trace s XLA": f"{q.trace_seconds:.2f}" if q else "-",
        })
    columns = ["phase", "unfreeze", "ms/step", "ms/step XLA", "XLA speed-up", "trace s",
               "trace s XLA"]
    print_rows(out, rows, columns, ["trace s XLA", "trace s"], right=tuple(columns[2:]))
    if not on.jit_compile:
        out.print("[yellow]Keras refused XLA for this model: both columns ran without it[/yellow]")
    out.print("[dim]ms/step: median; XLA speed-up: ms/step without over with XLA (above 1: XLA "
              "is faster); trace s: warm-up time beyond the median step (trace/compile)[/dim]")

"""The ``keras-tlft`` command line: parsing and rendering only; the work is the public API's.

Heavy imports (Keras, TensorFlow) happen inside the verbs that need them, so ``--help``,
``list`` and ``plugins`` start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad input on the command line."""


def _fmt_int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


# --- list -------------------------------------------------------------------------------------


def cmd_list(args, out: Console) -> int:
    from keras_tlft.registry import list_backbones

    specs = list_backbones(args.source)
    if args.source and not specs:
        raise UsageError(f"No backbones from source {args.source!r}; run `keras-tlft plugins`.")
    rows = [
        {
            "name": s.name,
            "key": s.key,
            "source": s.source,
            "family": s.family,
            "params": s.params,
            "default_input_shape": list(s.default_input_shape),
            "min_input_size": s.min_input_size,
            "blocks": len(s.blocks),
            "preprocessing": s.preprocessing if isinstance(s.preprocessing, str) else "custom",
            "weights": list(s.weights),
            "offline_weights": list(s.offline_weights),
            "description": s.description,
        }
        for s in specs
    ]
    if args.json:
        return _print_json(rows)
    table = Table(title=f"{len(rows)} backbones")
    for col, justify in [("name", "left"), ("source", "left"), ("family", "left"),
                         ("parameters", "right"), ("input", "right"), ("blocks", "right"),
                         ("offline", "left")]:
        table.add_column(col, justify=justify,
                         no_wrap=col in ("name", "parameters", "input", "offline"))
    for r in rows:
        table.add_row(r["name"], r["source"], r["family"], _fmt_int(r["params"]),
                      _shape(r["default_input_shape"]), str(r["blocks"] or "derived"),
                      ", ".join(r["offline_weights"]) or "-")
    table.caption = "offline: pretrained weights that load with no network"
    out.print(table)
    return EXIT_OK


# --- plugins ----------------------------------------------------------------------------------


def cmd_plugins(args, out: Console) -> int:
    from keras_tlft.registry import get_registry

    registry = get_registry()
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
            "backbones": registry.counts.get(p.name, 0),
        }
        for p in registry.plugins
    ]
    failures = [{"plugin": f.plugin, "reason": f.reason} for f in registry.failures]
    if args.json:
        return _print_json({"plugins": rows, "failures": failures})
    table = Table(title="keras-tlft plugins")
    for col in ("plugin", "distribution", "version", "backbones", "hooks"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["distribution"] or "-", r["version"] or "-",
                      str(r["backbones"]), ", ".join(r["hooks"]))
    out.print(table)
    for f in failures:
        out.print(f"[red]failed[/red] {f['plugin']}: {f['reason']}")
    return EXIT_OK


# --- inspect ----------------------------------------------------------------------------------


def cmd_inspect(args, out: Console) -> int:
    from keras_tlft.assembly import parse_input_shape
    from keras_tlft.blocks import parse_unfreeze
    from keras_tlft.heads import resolve_head
    from keras_tlft.registry import get_backbone

    # Validate everything before the slow part (importing Keras, building the model).
    get_backbone(args.name)
    shape = parse_input_shape(args.input_shape, "--input-shape") if args.input_shape else None
    if args.unfreeze is not None:
        parse_unfreeze(args.unfreeze, "--unfreeze")
    if args.head is not None:
        resolve_head(args.head, args.num_classes)
    if args.schedule is not None:
        from keras_tlft.schedule import parse_schedule

        parse_schedule(args.schedule)

    _quiet_tensorflow()
    from keras_tlft.report import inspect_backbone

    report = inspect_backbone(
        args.name,
        input_shape=shape,
        include_top=args.include_top,
        head=args.head,
        num_classes=args.num_classes,
        unfreeze=args.unfreeze,
        train_bn=args.train_bn,
        include_layers=args.layers,
        schedule=args.schedule,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
    )
    if args.json:
        return _print_json(report)
    _render_inspect(report, out)
    return EXIT_OK


def _render_inspect(r: dict, out: Console) -> None:
    title = f"{r['source']}:{r['backbone']}  input {_shape(r['input_shape'])}"
    if r["include_top"]:
        title += "  (with its ImageNet top)"
    if r["head"]:
        title += f"  head {r['head']}"
    if r["unfreeze"] is not None:
        title += f"  unfreeze {r['unfreeze']}" + ("  (BatchNorm trained)" if r["train_bn"] else "")
    out.print(f"[bold]{title}[/bold]")
    types = ", ".join(f"{n} {t}" for t, n in sorted(r["layer_types"].items(), key=lambda x: -x[1]))
    out.print(f"{r['layers']} layers: {types}")
    if r.get("layer_table"):
        lt = Table(title="layers")
        for col, justify in [("#", "right"), ("name", "left"), ("type", "left"),
                             ("params", "right"), ("trainable", "right"), ("block", "left")]:
            lt.add_column(col, justify=justify)
        for row in r["layer_table"]:
            lt.add_row(str(row["index"]), row["name"], row["type"], _fmt_int(row["params"]),
                       _fmt_int(row["trainable_params"]), row["block"])
        out.print(lt)
    bt = Table(title="blocks")
    for col, justify in [("block", "left"), ("layers", "right"), ("first", "left"),
                         ("last", "left"), ("params", "right"), ("trainable", "right")]:
        bt.add_column(col, justify=justify)
    for b in r["blocks"]:
        trainable = _fmt_int(b["trainable_params"]) if b["trainable"] else "[dim]frozen[/dim]"
        bt.add_row(b["name"], f"{b['first_layer']}-{b['last_layer']}", b["first_layer_name"],
                   b["last_layer_name"], _fmt_int(b["params"]), trainable)
    out.print(bt)
    totals = Table(show_header=False, box=None)
    totals.add_column(justify="left")
    totals.add_column(justify="right")
    totals.add_row("total parameters", _fmt_int(r["total_params"]))
    totals.add_row("trainable", _fmt_int(r["trainable_params"]))
    totals.add_row("non-trainable", _fmt_int(r["non_trainable_params"]))
    out.print(totals)
    if r.get("weights"):
        offline = set(r.get("offline_weights", ()))
        names = [f"{w} (offline)" if w in offline else w for w in r["weights"]]
        out.print(f"pretrained weights: {', '.join(names)}")
    if r.get("plan"):
        _render_plan(r["plan"], out)


def _render_plan(plan: list, out: Console) -> None:
    table = Table(title="schedule plan")
    for col in ("stage", "epochs", "unfreeze", "new blocks", "trainable", "head lr",
                "block lr (top..bottom)"):
        table.add_column(col, justify="right" if col == "trainable" else "left")
    for s in plan:
        start = "?" if s["start_epoch"] is None else str(s["start_epoch"])
        end = "end" if s["end_epoch"] is None else str(s["end_epoch"] - 1)
        head, *blocks = [_rate(r) for r in s["learning_rates"]]
        span = "-" if not blocks else blocks[0] if blocks[0] == blocks[-1] else (
            f"{blocks[0]}..{blocks[-1]}")
        table.add_row(str(s["stage"]), f"{start}-{end}" if start != "?" else s["trigger"],
                      str(s["unfreeze"]), ", ".join(s["new_blocks"]) or "-",
                      _fmt_int(s["trainable_params"]), head, span)
    out.print(table)
    out.print("[dim]trainable: backbone parameters; block lr: the unfrozen blocks' learning "
              "rates, top block first (xN: times the optimizer's)[/dim]")


def _rate(rule: dict) -> str:
    if rule.get("learning_rate") is not None:
        return f"{rule['learning_rate']:.3g}"
    return f"x{rule['lr_scale']:.3g}"


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args, out: Console) -> int:
    from keras_tlft.blocks import parse_unfreeze
    from keras_tlft.registry import get_backbone

    get_backbone(args.name)
    parse_unfreeze(args.partial, "--partial")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
            raise UsageError(f"Keras is already loaded; set KERAS_BACKEND={args.backend} instead.")
        os.environ["KERAS_BACKEND"] = args.backend
    _quiet_tensorflow()
    from keras_tlft.bench import PHASES, device_name, run_bench

    if bad := [p for p in phases if p not in PHASES]:
        raise UsageError(f"Unknown phase(s) {', '.join(bad)}: expected some of "
                         f"{', '.join(PHASES)}. Received: --phases={args.phases!r}")
    device, on_gpu = device_name()
    batch = args.batch_size or (32 if on_gpu else 8)
    steps = args.steps or (50 if on_gpu else 10)
    err = Console(stderr=True, highlight=False)
    if not on_gpu and not args.json:
        err.print(f"[yellow]No GPU: measuring on {device} with small defaults "
                  f"(batch {batch}, {steps} steps).[/yellow]")
    kwargs = dict(batch_size=batch, image_size=args.image_size, steps=steps,
                  warmup_steps=args.warmup_steps, mixed_precision=args.mixed_precision,
                  jit_compile=args.jit, phases=phases, partial=args.partial)
    if args.json:
        report = run_bench(args.name, **kwargs)
    else:
        from rich.progress import Progress

        with Progress(console=err, transient=True) as progress:
            tasks = {p: progress.add_task(p, total=None) for p in phases}

            def on_step(phase, step, total):
                progress.update(tasks[phase], completed=step, total=total)

            report = run_bench(args.name, on_step=on_step, **kwargs)
    if args.json:
        _print_json(report.to_dict())
    else:
        _render_bench(report, out)
    if report.interrupted:
        err.print("[yellow]interrupted: the phases finished so far are shown[/yellow]")
        return 130
    return EXIT_OK


def _render_bench(r, out: Console) -> None:
    mp = "mixed precision" if r.mixed_precision else "float32"
    jit = "jit" if r.jit_compile else "no jit"
    out.print(f"[bold]{r.backbone}[/bold] on {r.device}, backend {r.backend}: batch "
              f"{r.batch_size}, {r.image_size}x{r.image_size}, {r.steps} steps after "
              f"{r.warmup_steps} warm-up, {mp}, {jit}")
    table = Table()
    for col in ("phase", "unfreeze", "trainable", "ms/step", "p10-p90", "img/s", "peak MiB",
                "trace s", "change s"):
        table.add_column(col, justify="left" if col in ("phase", "unfreeze") else "right")
    for p in r.phases:
        table.add_row(
            p.phase, p.unfreeze or "-", _fmt_int(p.trainable_params), f"{p.step_ms_median:.1f}",
            f"{p.step_ms_p10:.1f}-{p.step_ms_p90:.1f}", f"{p.images_per_second:.1f}",
            f"{p.peak_memory_mb:.0f}" if p.peak_memory_mb is not None else "-",
            f"{p.trace_seconds:.2f}",
            f"{p.stage_change_seconds:.3f}" if p.stage_change_seconds is not None else "-",
        )
    # Figures are the point of this table: never cut them to fit a narrow terminal or a pipe's
    # default 80 columns; a too-narrow terminal wraps the lines instead.
    natural = Measurement.get(out, out.options.update(max_width=1000), table).maximum
    width, out.width = out.width, max(out.width, natural)
    try:
        out.print(table)
    finally:
        out.width = width
    out.print(f"[dim]ms/step: median, p10-p90 its spread; memory: {r.memory_kind}; trace s: "
              f"warm-up time beyond the median step (trace/compile); change s: the callback's "
              f"own work at the stage change[/dim]")


# --- plumbing ---------------------------------------------------------------------------------


def _quiet_tensorflow() -> None:
    """Import Keras with TensorFlow's C++ start-up chatter (oneDNN, CUDA probes) kept off stderr.

    Those lines are written by C++ before any Python logging setting applies, so the only way to
    keep a CLI's stderr readable is to point file descriptor 2 elsewhere while importing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules or os.environ.get("KERAS_TLFT_DEBUG_IMPORT"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras

        keras.ops.zeros((1,))  # the backend's device probe happens on first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _print_json(doc) -> int:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    return EXIT_OK


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message on one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def make_parser() -> argparse.ArgumentParser:
    from keras_tlft import __version__

    parser = _Parser(
        prog="keras-tlft",
        description="Transfer learning and fine-tuning for Keras 3: backbones, heads, "
        "progressive unfreezing.",
    )
    parser.add_argument("--version", action="version", version=f"keras-tlft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="every registered backbone")
    p.add_argument("--source", help="only the backbones of this source (e.g. applications)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("plugins", help="installed backbone plugins, and any that failed")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "inspect",
        help="layers, blocks and parameters of a backbone (built offline, weights=None)",
        description="Layers, blocks and parameters of a backbone, built with weights=None. "
        "Without --head the backbone is shown as Keras builds it (all trainable); with --head "
        "it is the model build_model returns (backbone frozen). --unfreeze shows what an "
        "unfreeze state trains, exactly as ProgressiveUnfreeze applies it.",
    )
    p.add_argument("name", help="backbone name, e.g. vgg16 or applications:resnet50")
    p.add_argument("--input-shape", metavar="H,W,C", help="input shape (default: the backbone's)")
    p.add_argument("--include-top", action="store_true", help="include the ImageNet classifier")
    p.add_argument("--head", metavar="SPEC", help="add a head: a preset (gap, vgg, mlp, mlp_bn) "
                   "or a spec such as 'gap,dropout:0.2,dense:10:softmax'")
    p.add_argument("--num-classes", type=_positive_int, metavar="N",
                   help="classes, for a head preset or a head spec without a final dense layer")
    p.add_argument("--unfreeze", metavar="SPEC",
                   help="none, all, k (top k blocks) or from:INDEX|LAYER_NAME")
    p.add_argument("--train-bn", action="store_true",
                   help="with --unfreeze: train BatchNorm layers too (default: they stay frozen)")
    p.add_argument("--layers", action="store_true", help="add the per-layer table")
    p.add_argument("--schedule", metavar="PRESET|FILE",
                   help="print a ProgressiveUnfreeze schedule stage by stage: a preset "
                   "(two_phase, gradual:every=2, fine_tune_at:layer=100, plateau) or a JSON file")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="with --schedule: the run's number of epochs")
    p.add_argument("--learning-rate", type=float, metavar="LR",
                   help="with --schedule: the optimizer's learning rate, for absolute rates")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "bench",
        help="throughput, memory and stage-change cost per training phase (synthetic data)",
        description="Measure one backbone (+ a GAP head) on synthetic data: frozen, partially "
        "unfrozen, fully unfrozen, inference. Uses the GPU when there is one; on a CPU it runs "
        "with small defaults. Ctrl-C stops it with the phases finished so far.",
    )
    p.add_argument("name", help="backbone name, e.g. mobilenet_v2")
    p.add_argument("--batch-size", type=_positive_int, help="default: 32 on a GPU, 8 on a CPU")
    p.add_argument("--image-size", type=_positive_int, help="default: the backbone's own")
    p.add_argument("--steps", type=_positive_int, help="measured steps per phase "
                   "(default: 50 on a GPU, 10 on a CPU)")
    p.add_argument("--warmup-steps", type=_positive_int, default=2,
                   help="steps before measuring (they include the trace/compile)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="mixed_float16 on a GPU, mixed_bfloat16 on a CPU")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                   help="compile with XLA (default: on)")
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                   help="the Keras backend (default: KERAS_BACKEND, else tensorflow)")
    p.add_argument("--phases", default="frozen,partial,full,inference",
                   help="comma-separated: frozen, partial, full, inference")
    p.add_argument("--partial", default="1", metavar="SPEC",
                   help="unfreeze spec of the partial phase: k or from:... (default: 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    err = Console(stderr=True, highlight=False)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    out = Console(highlight=False)
    try:
        return args.func(args, out)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return 130
    except (ValueError, TypeError) as exc:
        if args.debug:
            raise
        err.print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except Exception as exc:
        if args.debug:
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())

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
from rich.markup import escape
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad input on the command line."""


def _fmt_int(n) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape)


# --- list -------------------------------------------------------------------------------------


def _report_collisions(registry) -> None:
    """Bare names that several sources register, on stderr (a message, not the listing)."""
    err = Console(stderr=True, highlight=False, emoji=False)
    for collision in registry.collisions:
        err.print(f"[yellow]name collision:[/yellow] {escape(collision.message())}",
                  soft_wrap=True)


def cmd_list(args, out: Console) -> int:
    from keras_tlft.registry import get_registry, list_backbones

    specs = list_backbones(args.source, pattern=args.pattern, offline_weights=args.offline_weights)
    if args.source and not list_backbones(args.source):
        raise UsageError(f"No backbones from source {args.source!r}; run `keras-tlft plugins` "
                         f"for the installed sources. Received: --source={args.source!r}")
    rows = [
        {
            "name": s.name,
            "key": s.key,
            "source": s.source,
            "family": s.family,
            "aliases": list(s.aliases),
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
    _report_collisions(get_registry())
    if args.json:
        return _print_json(rows)
    header = ["name", "source", "family", "parameters", "input", "blocks", "offline"]
    cells = [[r["name"], r["source"], r["family"], _fmt_int(r["params"]),
              _shape(r["default_input_shape"]), str(r["blocks"] or "derived"),
              ", ".join(r["offline_weights"]) or "-"] for r in rows]
    right = {"parameters", "input", "blocks"}
    if not out.is_terminal:  # a pipe or a file: plain columns, as `pip list` prints them
        _print_plain(header, cells, right)
        return EXIT_OK
    table = Table(title=f"{len(rows)} backbones",
                  caption="offline: pretrained weights that load with no network")
    for col in header:
        table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
    for row in cells:
        table.add_row(*(escape(c) for c in row))
    print_figures(out, table)
    return EXIT_OK


def _print_plain(header: list[str], cells: list[list[str]], right: set[str]) -> None:
    """Columns separated by two spaces, under a header and a rule, without styling or cuts."""
    widths = [max(len(x) for x in column) for column in zip(header, *cells)]
    rule = ["-" * w for w in widths]
    for row in (header, rule, *cells):
        line = "  ".join(c.rjust(w) if h in right else c.ljust(w)
                         for c, w, h in zip(row, widths, header))
        sys.stdout.write(line.rstrip() + "\n")


# --- plugins ----------------------------------------------------------------------------------


def cmd_plugins(args, out: Console) -> int:
    from keras_tlft.registry import get_registry, natural_key

    registry = get_registry()
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
            "backbones": registry.counts.get(p.name, 0),
            "api_version": p.api_version,
            "entry_point": p.entry_point,
            "module": p.module,
            "load_seconds": p.load_seconds,
            "names": sorted((s.name for k, s in registry.specs.items()
                             if registry.registrant[k] == p.name), key=natural_key),
            "heads": sorted(n for (kind, n), o in registry.recipe_owner.items()
                            if kind == "head" and o == p.name),
            "schedules": sorted(n for (kind, n), o in registry.recipe_owner.items()
                                if kind == "schedule" and o == p.name),
            "unavailable": registry.unavailable.get(p.name),
        }
        for p in registry.plugins
    ]
    failures = [{"plugin": f.plugin, "reason": f.reason} for f in registry.failures]
    collisions = [
        {"name": c.name, "keys": list(c.keys), "resolves_to": c.resolves_to,
         "message": c.message()}
        for c in registry.collisions
    ]
    if args.json:
        return _print_json({"plugins": rows, "failures": failures, "collisions": collisions,
                            "disabled": registry.disabled})
    if args.verbose:
        _render_plugins_verbose(rows, out)
    else:
        _render_plugins_table(rows, out)
    for f in failures:
        out.print(f"[red]failed[/red] {escape(f['plugin'])}: {escape(f['reason'])}")
    for c in collisions:
        out.print(f"[yellow]name collision[/yellow] {escape(c['message'])}")
    for name in registry.disabled:
        out.print(f"[dim]disabled[/dim] {escape(name)} (KERAS_TLFT_DISABLE_PLUGINS)")
    return EXIT_OK


def _render_plugins_table(rows: list, out: Console) -> None:
    table = Table(title="keras-tlft plugins")
    for col in ("plugin", "distribution", "version", "backbones", "hooks"):
        table.add_column(col)
    for r in rows:
        table.add_row(escape(r["name"]), escape(r["distribution"] or "-"),
                      escape(r["version"] or "-"), str(r["backbones"]), ", ".join(r["hooks"]))
    out.print(table)


def _render_plugins_verbose(rows: list, out: Console) -> None:
    """One block per plugin; long values (paths, name lists) fold, never cut."""
    for r in rows:
        api = ("no API declared" if r["api_version"] is None
               else f"plugin API {r['api_version']}")
        out.print(f"[bold]{escape(r['name'])}[/bold]  {escape(r['distribution'] or '-')} "
                  f"{escape(r['version'] or '')}  ({api})", soft_wrap=True)
        load = f"{r['load_seconds']:.3f} s" if r["load_seconds"] is not None else "-"
        names = ", ".join(r["names"])
        fields = [("entry point", r["entry_point"] or "-"), ("module", r["module"] or "-"),
                  ("load time", load), ("hooks", ", ".join(r["hooks"]) or "-"),
                  ("backbones", f"{r['backbones']}" + (f": {names}" if names else ""))]
        if r["heads"]:
            fields.append(("heads", ", ".join(r["heads"])))
        if r["schedules"]:
            fields.append(("schedules", ", ".join(r["schedules"])))
        if r["backbones"] == 0 and "register_backbones" in r["hooks"]:
            fields.append(("why 0", r["unavailable"] or "its hook registered nothing"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="dim")
        grid.add_column(overflow="fold")
        for key, value in fields:
            grid.add_row(key, escape(value))
        out.print(Padding(grid, (0, 0, 0, 2)))


# --- check / new-plugin -----------------------------------------------------------------------


def cmd_check(args, out: Console) -> int:
    from keras_tlft.registry import get_registry

    registry = get_registry()
    known = {p.name for p in registry.plugins} | {f.plugin for f in registry.failures}
    if args.plugin is not None and args.plugin not in known:
        raise UsageError(f"No plugin named {args.plugin!r}; run `keras-tlft plugins` for the "
                         f"installed ones. Received: plugin={args.plugin!r}")
    selected = [p for p in sorted(known) if args.plugin in (None, p)]
    specs = [s for k, s in registry.specs.items() if registry.registrant[k] in selected]
    specs.sort(key=lambda s: s.key)
    problems = [{"backbone": None, "plugin": f.plugin, "problem": f.reason}
                for f in registry.failures if f.plugin in selected]
    if args.build:
        _quiet_tensorflow()
    err = Console(stderr=True, highlight=False, emoji=False)
    with err.status("checking", spinner="dots") if not args.json else _no_status() as status:
        for i, spec in enumerate(specs, start=1):
            if status is not None:
                status.update(f"checking {escape(spec.key)} ({i}/{len(specs)})")
            problem = _check_one(spec, args.build)
            if problem is not None:
                problems.append({"backbone": spec.key, "plugin": spec.source, "problem": problem})
    doc = {"plugins": selected, "checked": len(specs), "built": args.build,
           "failures": problems}
    if args.json:
        _print_json(doc)
    else:
        _render_check(doc, out)
    return EXIT_FAILURE if problems else EXIT_OK


class _no_status:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _check_one(spec, build: bool) -> str | None:
    """The conformance kit's verdict on one spec: ``None``, or the reason it fails."""
    from keras_tlft.testing import check_backbone_spec

    side = max(spec.min_input_size, 64)
    shape = (side, side, spec.default_input_shape[2]) if build else None
    if build and max(spec.default_input_shape[:2]) <= side:
        shape = None  # the default is small already: build there, where `params` is compared
    try:
        check_backbone_spec(spec, build=build, input_shape=shape)
    except AssertionError as exc:
        return str(exc).partition(": ")[2] or str(exc)
    finally:
        if build:
            import keras

            keras.backend.clear_session()
    return None


def _render_check(doc: dict, out: Console) -> None:
    what = "built and checked" if doc["built"] else "checked (static; --build builds them too)"
    failed = len(doc["failures"])
    out.print(f"{doc['checked']} backbones of {escape(', '.join(doc['plugins']) or 'no plugin')} "
              f"{what}: " + ("[green]all conform[/green]" if not failed
                             else f"[red]{failed} failure(s)[/red]"), soft_wrap=True)
    if not failed:
        return
    table = Table()
    table.add_column("plugin", no_wrap=True)
    table.add_column("backbone", overflow="fold")
    table.add_column("problem", overflow="fold")
    for f in doc["failures"]:
        table.add_row(escape(f["plugin"] or "-"), escape(f["backbone"] or "(plugin)"),
                      escape(f["problem"]))
    out.print(table)


def cmd_new_plugin(args, out: Console) -> int:
    from keras_tlft.plugin_template import write_plugin_project

    directory = args.directory or f"keras-tlft-{args.name.replace('_', '-')}"
    written = write_plugin_project(args.name, directory)
    if args.json:
        return _print_json({"name": args.name, "directory": directory,
                            "files": [str(p) for p in written]})
    out.print(f"Created the plugin project {escape(directory)}:", soft_wrap=True)
    for path in written:
        out.print(f"  {escape(str(path))}", soft_wrap=True)
    out.print(f"Next: cd {escape(directory)} && pip install -e . && python -m pytest && "
              f"keras-tlft check {escape(args.name)} --build", soft_wrap=True)
    return EXIT_OK


# --- inspect ----------------------------------------------------------------------------------


def cmd_inspect(args, out: Console) -> int:
    from keras_tlft.assembly import parse_input_shape
    from keras_tlft.blocks import parse_unfreeze
    from keras_tlft.heads import resolve_head
    from keras_tlft.registry import get_backbone

    # Validate everything before the slow part (importing Keras, building the model).
    shape = parse_input_shape(args.input_shape, "--input-shape") if args.input_shape else None
    if args.unfreeze is not None:
        parse_unfreeze(args.unfreeze, "--unfreeze")
    if args.head is not None:
        resolve_head(args.head, args.num_classes)
    if args.schedule is not None:
        from keras_tlft.schedule import parse_schedule

        parse_schedule(args.schedule)
    from keras_tlft.local import check_model_file, is_local_path

    if is_local_path(args.name):
        check_model_file(os.fspath(args.name))
        _quiet_tensorflow()  # reading a local file's spec loads it with Keras
    get_backbone(args.name)

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
    out.print(f"[bold]{escape(title)}[/bold]")
    types = ", ".join(f"{n} {t}" for t, n in sorted(r["layer_types"].items(), key=lambda x: -x[1]))
    out.print(f"{r['layers']} layers: {escape(types)}")
    if r.get("layer_table"):
        lt = Table(title="layers")
        for col, justify in [("#", "right"), ("name", "left"), ("type", "left"),
                             ("params", "right"), ("trainable", "right"), ("block", "left")]:
            # Layer names are folded onto more lines, never cut: from:LAYER_NAME needs them.
            lt.add_column(col, justify=justify, overflow="fold",
                          no_wrap=col in ("#", "params", "trainable"))
        for row in r["layer_table"]:
            lt.add_row(str(row["index"]), escape(row["name"]), escape(row["type"]),
                       _fmt_int(row["params"]), _fmt_int(row["trainable_params"]),
                       escape(row["block"]))
        out.print(lt)
    bt = Table(title="blocks")
    for col, justify in [("block", "left"), ("layers", "right"), ("first", "left"),
                         ("last", "left"), ("params", "right"), ("trainable", "right")]:
        bt.add_column(col, justify=justify, overflow="fold",
                      no_wrap=col in ("layers", "params", "trainable"))
    for b in r["blocks"]:
        trainable = _fmt_int(b["trainable_params"]) if b["trainable"] else "[dim]frozen[/dim]"
        bt.add_row(escape(b["name"]), f"{b['first_layer']}-{b['last_layer']}",
                   escape(b["first_layer_name"]), escape(b["last_layer_name"]),
                   _fmt_int(b["params"]), trainable)
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
        out.print(escape(f"pretrained weights: {', '.join(names)}"))
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
                      escape(str(s["unfreeze"])), escape(", ".join(s["new_blocks"]) or "-"),
                      _fmt_int(s.get("model_trainable_params", s["trainable_params"])), head, span)
    out.print(table)
    out.print("[dim]trainable: the model's trainable parameters (head included), as the totals "
              "count them; block lr: the unfrozen blocks' learning rates, top block first (xN: "
              "times the optimizer's)[/dim]")


def _rate(rule: dict) -> str:
    if rule.get("learning_rate") is not None:
        return f"{rule['learning_rate']:.3g}"
    return f"x{rule['lr_scale']:.3g}"


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args, out: Console) -> int:
    from keras_tlft.bench import PHASES  # plain data: the module imports Keras only when run
    from keras_tlft.blocks import parse_unfreeze
    from keras_tlft.registry import get_backbone

    get_backbone(args.name)
    parse_unfreeze(args.partial, "--partial")
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if bad := [p for p in phases if p not in PHASES]:
        raise UsageError(f"Unknown phase(s) {', '.join(bad)}: expected some of "
                         f"{', '.join(PHASES)}. Received: --phases={args.phases!r}")
    if not phases:
        raise UsageError(f"No phase to measure: expected a comma-separated list of some of "
                         f"{', '.join(PHASES)}. Received: --phases={args.phases!r}")
    if args.backend:
        if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
            raise UsageError(f"Keras is already loaded; set KERAS_BACKEND={args.backend} instead.")
        os.environ["KERAS_BACKEND"] = args.backend
    _quiet_tensorflow()
    from keras_tlft.bench import device_name, run_bench

    device, on_gpu = device_name()
    batch = args.batch_size or (32 if on_gpu else 8)
    steps = args.steps or (50 if on_gpu else 10)
    err = Console(stderr=True, highlight=False, emoji=False)
    if not on_gpu and not args.json:
        err.print(f"[yellow]No GPU: measuring on {escape(device)} with small defaults "
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
    out.print(f"[bold]{escape(r.backbone)}[/bold] on {escape(r.device)}, backend {r.backend}: "
              f"batch "
              f"{r.batch_size}, {r.image_size}x{r.image_size}, {r.steps} steps after "
              f"{r.warmup_steps} warm-up, {mp}, {jit}")
    table = Table()
    for col in ("phase", "unfreeze", "trainable", "ms/step", "p10-p90", "img/s", "peak MiB",
                "trace s", "change s"):
        table.add_column(col, justify="left" if col in ("phase", "unfreeze") else "right")
    for p in r.phases:
        table.add_row(
            p.phase, escape(p.unfreeze or "-"), _fmt_int(p.trainable_params),
            f"{p.step_ms_median:.1f}",
            f"{p.step_ms_p10:.1f}-{p.step_ms_p90:.1f}", f"{p.images_per_second:.1f}",
            f"{p.peak_memory_mb:.0f}" if p.peak_memory_mb is not None else "-",
            f"{p.trace_seconds:.2f}",
            f"{p.stage_change_seconds:.3f}" if p.stage_change_seconds is not None else "-",
        )
    print_figures(out, table)
    out.print(f"[dim]ms/step: median, p10-p90 its spread; memory: {r.memory_kind}; trace s: "
              f"warm-up time beyond the median step (trace/compile); change s: the callback's "
              f"own work at the stage change[/dim]")


# --- plumbing ---------------------------------------------------------------------------------


def print_figures(out: Console, table: Table) -> None:
    """Print a table of figures at its natural width: never cut to fit a narrow terminal or a
    pipe's default 80 columns (a too-narrow terminal wraps the lines instead)."""
    natural = Measurement.get(out, out.options.update(max_width=1000), table).maximum
    width, out.width = out.width, max(out.width, natural)
    try:
        out.print(table)
    finally:
        out.width = width


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


def _learning_rate(text: str) -> float:
    """``--learning-rate``: checked as the Python API checks every learning rate."""
    from keras_tlft.schedule import check_number

    try:
        value = float(text)
    except ValueError:
        value = text
    try:
        check_number("--learning-rate", value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _attach_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--input-shape -1,224,3`` as ``--input-shape=-1,224,3``: argparse takes a value that
    starts with ``-`` for an option (unless it is a plain negative number) and reports "expected
    one argument"; attached, the value reaches the option's own check and its message."""
    # An option that takes no value (a switch, --help, --version) has nargs=0.
    takes_value = {flag for action in _all_actions(parser) if action.nargs is None
                   for flag in action.option_strings}
    known = {flag for action in _all_actions(parser) for flag in action.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (arg in takes_value and nxt is not None and nxt.startswith("-") and nxt != "--"
                and nxt.split("=")[0] not in known):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        if arg == "--":
            out.extend(argv[i:])
            break
        out.append(arg)
        i += 1
    return out


def _all_actions(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public list of a parser's options
        yield action
        if action.option_strings or not isinstance(action.choices, dict):
            continue
        for sub in action.choices.values():  # the subcommands' parsers
            yield from _all_actions(sub)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 too; keep its message on one line
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def make_parser() -> argparse.ArgumentParser:
    from keras_tlft import __version__

    parser = _Parser(
        prog="keras-tlft",
        description="Transfer learning and fine-tuning for Keras 3: backbones, heads, "
        "progressive unfreezing.",
    )
    parser.add_argument("--version", action="version", version=f"keras-tlft {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.epilog = _examples("keras-tlft list 'resnet*'", "keras-tlft inspect vgg16 --unfreeze 1",
                              "keras-tlft plugins --verbose", "keras-tlft COMMAND --help")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # --debug after the verb too; SUPPRESS keeps the subparser from resetting a --debug given
    # before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")

    def verb(name, examples, **kwargs):
        return sub.add_parser(name, parents=[debug], epilog=_examples(*examples),
                              formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    p = verb("list", ["keras-tlft list", "keras-tlft list 'resnet*'",
                      "keras-tlft list '*:vgg*' --json", "keras-tlft list --source keras_hub",
                      "keras-tlft list --offline-weights", "keras-tlft list | grep efficientnet"],
             help="every registered backbone",
             description="Every registered backbone, by source, then by name in natural order "
             "(resnet50 before resnet101). Plain columns when the output is not a terminal.")
    p.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="only names (or source:name, or aliases) matching this wildcard, e.g. "
                   "'resnet*' or '*:vgg*' (quote it from the shell)")
    p.add_argument("--source", help="only the backbones of this source (e.g. applications)")
    p.add_argument("--offline-weights", action="store_true",
                   help="only backbones whose pretrained weights load with no network")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_list)

    p = verb("plugins", ["keras-tlft plugins", "keras-tlft plugins --verbose",
                         "keras-tlft plugins --json",
                         "KERAS_TLFT_DISABLE_PLUGINS=keras_hub keras-tlft plugins"],
             help="installed backbone plugins, and any that failed",
             description="Installed plugins, their versions and backbones, the plugins that "
             "failed and why, bare-name collisions, and the plugins disabled by "
             "KERAS_TLFT_DISABLE_PLUGINS.")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="each plugin's entry point, module, load time, plugin API version, "
                   "names registered, and why it registers no backbones")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (always with the --verbose details)")
    p.set_defaults(func=cmd_plugins)

    p = verb("check", ["keras-tlft check", "keras-tlft check example --build",
                       "keras-tlft check keras_cv --json"],
             help="run the conformance kit over installed plugins' backbones",
             description="Run keras_tlft.testing.check_backbone_spec over every backbone of the "
             "installed plugins (or of PLUGIN), plus the plugins' load and registration "
             "failures. Exit 1 with a table of what fails.")
    p.add_argument("plugin", nargs="?", metavar="PLUGIN", help="only this plugin's backbones")
    p.add_argument("--build", action="store_true",
                   help="also build each backbone offline at a small input (64 pixels, or its "
                   "minimum) and run it: slow for many backbones")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_check)

    p = verb("new-plugin", ["keras-tlft new-plugin mylab",
                            "keras-tlft new-plugin mylab --directory plugins/mylab"],
             help="create a backbone-plugin project whose tests pass out of the box",
             description="Write a plugin project (pyproject.toml with the entry point, a package "
             "registering a tiny example backbone, tests running the conformance kit) into "
             "DIRECTORY (default: keras-tlft-NAME).")
    p.add_argument("name", metavar="NAME",
                   help="the plugin's name: lowercase letters, digits and '_' (the entry point "
                   "and the source of its backbones)")
    p.add_argument("--directory", metavar="DIR", help="where to write it (must not exist)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_new_plugin)

    p = verb(
        "inspect",
        ["keras-tlft inspect vgg16", "keras-tlft inspect resnet50 --head gap --num-classes 10 "
         "--unfreeze 1", "keras-tlft inspect mobilenet_v2 --unfreeze from:100 --layers",
         "keras-tlft inspect mobilenet_v2 --head gap --num-classes 10 --schedule "
         "gradual:every=2 --epochs 10 --learning-rate 1e-3",
         "keras-tlft inspect mine.keras --json"],
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
    p.add_argument("--learning-rate", type=_learning_rate, metavar="LR",
                   help="with --schedule: the optimizer's learning rate, for absolute rates")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_inspect)

    p = verb(
        "bench",
        ["keras-tlft bench mobilenet_v2",
         "keras-tlft bench resnet50 --batch-size 64 --mixed-precision --phases frozen,full",
         "keras-tlft bench mobilenet_v2 --backend jax --json"],
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

    from keras_tlft.cli_lr_find import add_parser as add_lr_find

    add_lr_find(sub)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(_attach_dash_values(parser, argv))
    err = Console(stderr=True, highlight=False, emoji=False)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    out = Console(highlight=False, emoji=False)
    try:
        return args.func(args, out)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        if is_bad_input(exc):
            err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            return EXIT_BAD_INPUT
        err.print(f"[red]error:[/red] {escape(f'{type(exc).__name__}: {exc}')} [dim](rerun with "
                  f"--debug for the traceback)[/dim]", soft_wrap=True)
        return EXIT_FAILURE


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is one of our deliberate bad-input errors (exit 2), not a failure (exit 1).

    Deliberate ones are :class:`UsageError`, the name-resolution errors, and every
    ``ValueError``/``TypeError`` that keras-tlft's own code raises in Keras's message shape
    (ending with ``Received: name=value``). Anything else, including a ``TypeError`` from a bug in
    our code or an error raised inside Keras or a plugin, is a failure of the work.
    """
    from keras_tlft.spec import AmbiguousBackboneError, UnknownBackboneError

    if isinstance(exc, (UsageError, UnknownBackboneError, AmbiguousBackboneError)):
        return True
    if not isinstance(exc, (ValueError, TypeError)) or "Received:" not in str(exc):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module == "keras_tlft" or module.startswith("keras_tlft.")


if __name__ == "__main__":
    raise SystemExit(main())

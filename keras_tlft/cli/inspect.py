"""``keras-tlft inspect``: a backbone's layers, blocks and schedule plan."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keras_tlft.cli._common import (
    EXIT_OK,
    UsageError,
    _fmt_int,
    _print_json,
    _quiet_tensorflow,
    _shape,
    print_rows,
)

# --- inspect ----------------------------------------------------------------------------------


def cmd_inspect(args, out: Console) -> int:
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.assembly import parse_input_shape
    from keras_tlft.model.blocks import parse_unfreeze
    from keras_tlft.model.heads import resolve_head

    # Validate everything before the slow part (importing Keras, building the model).
    bn = _bn_policy(args)
    _refuse_options_that_do_nothing(args)
    shape = parse_input_shape(args.input_shape, "--input-shape") if args.input_shape else None
    if args.unfreeze is not None:
        parse_unfreeze(args.unfreeze, "--unfreeze")
    if args.head is not None:
        resolve_head(args.head, args.num_classes)
    if args.schedule is not None:
        from keras_tlft.schedules.schedule_input import parse_schedule

        parse_schedule(args.schedule)
    from keras_tlft.backbones.local import check_model_file, is_local_path

    if is_local_path(args.name):
        check_model_file(os.fspath(args.name))
        _quiet_tensorflow()  # reading a local file's spec loads it with Keras
    spec = get_backbone(args.name)
    if shape is not None and args.head is None and min(shape[:2]) < spec.min_input_size:
        m = spec.min_input_size
        raise UsageError(
            f"{spec.key} needs at least {m}x{m} pixels: pass a larger --input-shape (its "
            f"default is {_shape(spec.default_input_shape)}), or add --head, whose model resizes "
            f"smaller images up to {m}x{m}. Received: --input-shape={args.input_shape}")

    _quiet_tensorflow()
    from keras_tlft.cli import is_bad_input
    from keras_tlft.reporting.report import inspect_backbone

    try:
        report = inspect_backbone(
            args.name,
            input_shape=shape,
            include_top=args.include_top,
            head=args.head,
            num_classes=args.num_classes,
            unfreeze=args.unfreeze,
            bn=bn,
            include_layers=args.layers,
            schedule=args.schedule,
            epochs=args.epochs,
            learning_rate=args.learning_rate,
        )
    except ValueError as exc:
        # Keras refuses a shape the spec did not know was too small (or too odd): the input
        # is at fault, not keras-tlft.
        if shape is None or is_bad_input(exc):
            raise
        why = str(exc).strip().rstrip(".")
        raise UsageError(f"{spec.key} cannot be built at input shape {_shape(shape)}: {why}. "
                         f"Pass another --input-shape (its default is "
                         f"{_shape(spec.default_input_shape)}). "
                         f"Received: --input-shape={args.input_shape}") from exc
    if args.json:
        return _print_json(report)
    _render_inspect(report, out)
    return EXIT_OK


def _bn_policy(args) -> str:
    """``--bn``, or its old spelling ``--train-bn``; both at once must agree."""
    if args.train_bn and args.bn not in (None, "train"):
        raise UsageError(f"--train-bn (the old spelling of --bn train) contradicts --bn "
                         f"{args.bn}: give one of them. Received: --bn={args.bn}, --train-bn")
    return "train" if args.train_bn else (args.bn or "frozen")


def _refuse_options_that_do_nothing(args) -> None:
    """Refuse an option that means something only next to another one that is missing."""
    rules = [  # (option, its value or None, whether what it needs is given, what, why)
        ("--num-classes", args.num_classes, args.head is not None, "--head",
         "it sets the classes of the head: add --head (e.g. --head gap)"),
        ("--epochs", args.epochs, args.schedule is not None, "--schedule",
         "it sets the schedule's length: add --schedule"),
        ("--learning-rate", args.learning_rate, args.schedule is not None, "--schedule",
         "it sets the schedule's learning rates: add --schedule"),
        ("--train-bn" if args.train_bn else "--bn", args.bn or (True if args.train_bn else None),
         args.unfreeze is not None, "--unfreeze",
         "it sets how the BatchNorm layers of unfrozen blocks train: add --unfreeze (with "
         "--schedule, set the schedule's own, e.g. gradual:bn=affine)"),
    ]
    for option, value, present, needs, why in rules:
        if value is not None and not present:
            shown = "" if value is True else f"={value}"
            raise UsageError(f"{option} does nothing without {needs}: {why}, or drop {option}. "
                             f"Received: {option}{shown}")


def _render_inspect(r: dict, out: Console) -> None:
    title = f"{r['source']}:{r['backbone']}  input {_shape(r['input_shape'])}"
    if r["include_top"]:
        title += "  (with its ImageNet top)"
    if r["head"]:
        title += f"  head {r['head']}"
    if r["unfreeze"] is not None:
        title += f"  unfreeze {r['unfreeze']}" + (f"  bn {r['bn']}" if r["bn"] != "frozen" else "")
    out.print(f"[bold]{escape(title)}[/bold]")
    types = ", ".join(f"{n} {t}" for t, n in sorted(r["layer_types"].items(), key=lambda x: -x[1]))
    out.print(f"{r['layers']} layers: {escape(types)}")
    if r.get("layer_table"):
        _render_layers(r["layer_table"], out)
    _render_blocks(r["blocks"], out)
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


# Layer names are never cut or folded (from:LAYER_NAME needs them whole, also copied from a
# pipe): they do not wrap, and the other columns go, least useful first, when the table is too
# wide.
def _render_layers(layer_table: list, out: Console) -> None:
    rows = [{"#": str(row["index"]), "name": escape(row["name"]), "type": escape(row["type"]),
             "params": _fmt_int(row["params"]), "trainable": _fmt_int(row["trainable_params"]),
             "block": escape(row["block"])} for row in layer_table]
    print_rows(out, rows, ["#", "name", "type", "params", "trainable", "block"],
               ["type", "params", "block"], right=("#", "params", "trainable"), title="layers")


def _render_blocks(blocks: list, out: Console) -> None:
    rows = [{"block": escape(b["name"]), "layers": f"{b['first_layer']}-{b['last_layer']}",
             "first": escape(b["first_layer_name"]), "last": escape(b["last_layer_name"]),
             "params": _fmt_int(b["params"]),
             "trainable": _fmt_int(b["trainable_params"]) if b["trainable"]
             else "[dim]frozen[/dim]"} for b in blocks]
    print_rows(out, rows, ["block", "layers", "first", "last", "params", "trainable"],
               ["params", "last", "layers"], right=("layers", "params", "trainable"),
               title="blocks")


def _render_plan(plan: list, out: Console) -> None:
    table = Table(title="schedule plan")
    for col in ("stage", "epochs", "unfreeze", "new blocks", "trainable", "head lr",
                "block lr"):
        # Folded, never cut with an ellipsis: a learning rate must stay whole in a narrow pipe.
        table.add_column(col, justify="right" if col == "trainable" else "left",
                         overflow="fold", no_wrap=col in ("trainable", "head lr"))
    for s in plan:
        start = "?" if s["start_epoch"] is None else str(s["start_epoch"])
        end = "end" if s["end_epoch"] is None else str(s["end_epoch"] - 1)
        head, *blocks = [_rate(r) for r in s["learning_rates"]]
        span = "-" if not blocks else blocks[0] if blocks[0] == blocks[-1] else (
            f"{blocks[0]}..{blocks[-1]}")
        # A plateau's trigger is one sentence for every stage: said once, under the table.
        when = (f"{start}-{end}" if start != "?" else
                s["trigger"] if s["trigger"] == "start" else "plateau")
        table.add_row(str(s["stage"]), when,
                      escape(str(s["unfreeze"])), escape(", ".join(s["new_blocks"]) or "-"),
                      _fmt_int(s.get("model_trainable_params", s["trainable_params"])), head, span)
    out.print(table)
    for s in plan:
        if s.get("refrozen_blocks"):
            out.print(f"[yellow]stage {s['stage']} freezes again: "
                      f"{escape(', '.join(s['refrozen_blocks']))} (allow_refreeze)[/yellow]")
    out.print("[dim]trainable: the model's trainable parameters (head included), as the totals "
              "count them; block lr: the unfrozen blocks' learning rates, top..bottom (xN: "
              "times the optimizer's)[/dim]")
    triggers = dict.fromkeys(s["trigger"] for s in plan
                             if s["start_epoch"] is None and s["trigger"] != "start")
    for trigger in triggers:
        out.print(f"[dim]plateau: the next stage begins when {escape(trigger)}[/dim]")
    shape = plan[0].get("lr_shape")
    if shape:
        out.print(f"[dim]learning rates: {escape(shape)}[/dim]")


def _rate(rule: dict) -> str:
    if rule.get("learning_rate") is not None:
        return f"{rule['learning_rate']:.3g}"
    return f"x{rule['lr_scale']:.3g}"

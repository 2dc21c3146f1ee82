"""``keras-tlft inspect``: a backbone's layers, blocks and schedule plan."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from keras_tlft.cli._common import (
    EXIT_OK,
    _fmt_int,
    _print_json,
    _quiet_tensorflow,
    _shape,
)

# --- inspect ----------------------------------------------------------------------------------


def cmd_inspect(args, out: Console) -> int:
    from keras_tlft.backbones.registry import get_backbone
    from keras_tlft.model.assembly import parse_input_shape
    from keras_tlft.model.blocks import parse_unfreeze
    from keras_tlft.model.heads import resolve_head

    # Validate everything before the slow part (importing Keras, building the model).
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
    get_backbone(args.name)

    _quiet_tensorflow()
    from keras_tlft.reporting.report import inspect_backbone

    report = inspect_backbone(
        args.name,
        input_shape=shape,
        include_top=args.include_top,
        head=args.head,
        num_classes=args.num_classes,
        unfreeze=args.unfreeze,
        bn=args.bn,
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
        title += f"  unfreeze {r['unfreeze']}" + (f"  bn {r['bn']}" if r["bn"] != "frozen" else "")
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
        # Folded, never cut with an ellipsis: a learning rate must stay whole in a narrow pipe.
        table.add_column(col, justify="right" if col == "trainable" else "left",
                         overflow="fold", no_wrap=col in ("trainable", "head lr"))
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
    shape = plan[0].get("lr_shape")
    if shape:
        out.print(f"[dim]learning rates: {escape(shape)}[/dim]")


def _rate(rule: dict) -> str:
    if rule.get("learning_rate") is not None:
        return f"{rule['learning_rate']:.3g}"
    return f"x{rule['lr_scale']:.3g}"

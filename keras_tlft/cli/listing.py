"""``keras-tlft list``, ``plugins``, ``check`` and ``new-plugin``: the registry's verbs."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from keras_tlft.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    _fmt_int,
    _print_json,
    _quiet_tensorflow,
    _shape,
    fit_columns,
    make_console,
    print_fitted,
    print_rows,
    strip_controls,
)

# --- list -------------------------------------------------------------------------------------


def _report_collisions(registry) -> None:
    """Bare names that several sources register, on stderr (a message, not the listing)."""
    err = make_console(stderr=True)
    for collision in registry.collisions:
        err.print(f"[yellow]name collision:[/yellow] {escape(collision.message())}",
                  soft_wrap=True)


def cmd_list(args, out: Console) -> int:
    from keras_tlft.backbones.registry import list_backbones

    if args.source is not None and not args.source.strip():
        raise UsageError("--source is empty: give a source such as applications (run "
                         "`keras-tlft plugins` for the installed ones), or drop --source. "
                         f"Received: --source={args.source!r}")
    specs = list_backbones(args.source, pattern=args.pattern, offline_weights=args.offline_weights)
    if args.source and not list_backbones(args.source):
        raise UsageError(f"No backbones from source {args.source!r}; run `keras-tlft plugins` "
                         f"for the installed sources. Received: --source={args.source!r}")
    if not specs:
        _say_why_nothing_matched(args)
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
    if args.json:
        return _print_json(rows)
    header = ["name", "source", "family", "parameters", "input", "blocks", "offline"]
    cells = [[r["name"], r["source"], r["family"], _fmt_int(r["params"]),
              _shape(r["default_input_shape"]), str(r["blocks"] or "derived"),
              ", ".join(r["offline_weights"]) or "-"] for r in rows]
    right = {"parameters", "input", "blocks"}
    # Names are what a user types: never cut; the other columns go, least useful first.
    drop = ["family", "offline", "blocks", "input", "parameters"]  # least useful first
    if not out.is_terminal:  # a pipe or a file: plain columns, as `pip list` prints them
        if left_out := _print_plain(header, cells, right, width=out.width, drop=drop):
            make_console(stderr=True).print(
                f"[dim]left out to fit {out.width} columns: {', '.join(left_out)} (COLUMNS=200 "
                "or --json shows them)[/dim]")
        return EXIT_OK

    def make(columns):
        caption = "offline: pretrained weights that load with no network"
        table = Table(title=f"{len(rows)} backbones", show_edge=False,
                      caption=caption if "offline" in columns else None)
        for col in columns:
            table.add_column(col, justify="right" if col in right else "left", no_wrap=True)
        for row in cells:
            table.add_row(*(escape(c) for c, h in zip(row, header) if h in columns))
        return table

    print_fitted(out, make, header, drop)
    return EXIT_OK


def _say_why_nothing_matched(args) -> None:
    """An empty listing is not silent: say on stderr which filter left nothing, and why."""
    from keras_tlft.backbones.registry import list_backbones

    err = make_console(stderr=True)
    if args.pattern is not None and not list_backbones(args.source, pattern=args.pattern):
        where = f" from source {args.source!r}" if args.source else ""
        why = ("the pattern must match a whole name, source:name or alias, with the wildcards "
               "* (anything), ? (one character) and [abc] (one of a, b, c); e.g. "
               f"'*{args.pattern.strip('*')}*' for names containing it.")
        err.print(f"[yellow]No backbone{escape(where)} matches {escape(repr(args.pattern))}:"
                  f"[/yellow] {escape(why)}", soft_wrap=True)
    elif args.offline_weights:
        err.print("[yellow]None of the matching backbones has pretrained weights that load with "
                  "no network[/yellow] (drop --offline-weights to see them).", soft_wrap=True)


def _print_plain(header: list[str], cells: list[list[str]], right: set[str],
                 width: int | None = None, drop: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Columns separated by two spaces, under a header and a rule, without styling or cuts;
    columns of ``drop`` left out (least useful first) until the lines fit ``width``. Returns the
    columns left out."""
    widths = {h: max(map(len, column)) for h, *column in zip(header, header, *cells)}
    kept = fit_columns(width or 10**6, header, drop,
                       lambda cols: sum(widths[c] for c in cols) + 2 * (len(cols) - 1))
    rule = ["-" * widths[h] for h in header]
    for row in (header, rule, *cells):
        line = "  ".join(c.rjust(widths[h]) if h in right else c.ljust(widths[h])
                         for c, h in zip(row, header) if h in kept)
        sys.stdout.write(strip_controls(line.rstrip()) + "\n")
    return [h for h in header if h not in kept]


# --- plugins ----------------------------------------------------------------------------------


def cmd_plugins(args, out: Console) -> int:
    from keras_tlft.backbones.registry import get_registry, natural_key

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
    """Plugin names whole (`check PLUGIN` takes them); the other columns go when too wide."""
    rows = [{"plugin": escape(r["name"]), "distribution": escape(r["distribution"] or "-"),
             "version": escape(r["version"] or "-"), "backbones": str(r["backbones"]),
             "hooks": "\n".join(r["hooks"])} for r in rows]
    print_rows(out, rows, ["plugin", "distribution", "version", "backbones", "hooks"],
               ["hooks", "distribution", "version"], title="keras-tlft plugins")


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
    from keras_tlft.backbones.registry import get_registry

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
    err = make_console(stderr=True)
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
    from keras_tlft.backbones.testing import check_backbone_spec

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
    table.add_column("backbone", no_wrap=True)  # a name to type: whole; the problem folds
    table.add_column("problem", overflow="fold")
    for f in doc["failures"]:
        table.add_row(escape(f["plugin"] or "-"), escape(f["backbone"] or "(plugin)"),
                      escape(f["problem"]))
    out.print(table)


def cmd_new_plugin(args, out: Console) -> int:
    from keras_tlft.backbones.plugin_template import write_plugin_project

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

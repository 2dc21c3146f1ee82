"""The ``keras-tlft`` command line: parsing and rendering only; the work is the public API's.

Heavy imports (Keras, TensorFlow) happen inside the verbs that need them, so ``--help``,
``list`` and ``plugins`` start fast.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings

from rich.console import Console
from rich.markup import escape

from keras_tlft.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_OK,
    HelpFormatter,
    UsageError,
    _examples,
    _fmt_int,
    _learning_rate,
    _positive_int,
    _print_json,
    _quiet_tensorflow,
    _shape,
    make_console,
    print_figures,
)
from keras_tlft.cli.bench import _render_bench, cmd_bench
from keras_tlft.cli.inspect import _render_inspect, _render_plan, cmd_inspect
from keras_tlft.cli.listing import (
    _check_one,
    _print_plain,
    _render_check,
    _render_plugins_table,
    _render_plugins_verbose,
    _report_collisions,
    cmd_check,
    cmd_list,
    cmd_new_plugin,
    cmd_plugins,
)
from keras_tlft.model.batchnorm import BN_POLICIES

# The verbs live in the modules above; every name the old single-module cli had is still here.
__all__ = [
    "EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "UsageError", "_check_one", "_fmt_int",
    "_learning_rate", "_positive_int", "_print_json", "_print_plain", "_quiet_tensorflow",
    "_render_bench", "_render_check", "_render_inspect", "_render_plan", "_render_plugins_table",
    "_render_plugins_verbose", "_report_collisions", "_shape", "cmd_bench", "cmd_check",
    "cmd_inspect", "cmd_list", "cmd_new_plugin", "cmd_plugins", "is_bad_input", "main",
    "make_parser", "print_figures",
]

# --- parser ----------------------------------------------------------------------------------


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
    parser.formatter_class = HelpFormatter
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # --debug after the verb too; SUPPRESS keeps the subparser from resetting a --debug given
    # before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks on errors")

    def verb(name, examples, **kwargs):
        return sub.add_parser(name, parents=[debug], epilog=_examples(*examples),
                              formatter_class=HelpFormatter, **kwargs)

    p = verb("list", ["keras-tlft list", "keras-tlft list 'resnet*'",
                      "keras-tlft list '*:vgg*' --json", "keras-tlft list --source keras_hub",
                      "keras-tlft list --offline-weights", "keras-tlft list | grep efficientnet"],
             help="every registered backbone",
             description="Every registered backbone, by source, then by name in natural order "
             "(resnet50 before resnet101).\n\nIn a pipe or a file: plain columns, one backbone "
             "a line. Columns that do not fit the width (COLUMNS, else 80) are left out, never "
             "a name; --json has every field.")
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
             description="Run the conformance kit (keras_tlft.testing.check_backbone_spec) over "
             "every backbone of the installed plugins, or of PLUGIN.\n\nThe plugins' load and "
             "registration failures count too. Exit 1 with a table of what fails.")
    p.add_argument("plugin", nargs="?", metavar="PLUGIN", help="only this plugin's backbones")
    p.add_argument("--build", action="store_true",
                   help="also build each backbone offline at a small input (64 pixels, or its "
                   "minimum) and run it: slow for many backbones")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_check)

    p = verb("new-plugin", ["keras-tlft new-plugin mylab",
                            "keras-tlft new-plugin mylab --directory plugins/mylab"],
             help="create a backbone-plugin project whose tests pass out of the box",
             description="Write a backbone-plugin project into DIRECTORY (default: "
             "keras-tlft-NAME).\n\nIt holds pyproject.toml with the entry point, a package "
             "registering a tiny example backbone, and tests running the conformance kit.")
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
         "keras-tlft inspect mobilenet_v2 --head gap --num-classes 10 \\\n"
         "    --schedule gradual:every=2 --epochs 10 --learning-rate 1e-3",
         "keras-tlft inspect mine.keras --json"],
        help="layers, blocks and parameters of a backbone (built offline, weights=None)",
        description="Layers, blocks and parameters of a backbone, built with weights=None.\n\n"
        "Without --head the backbone is shown as Keras builds it (all trainable); with --head "
        "it is the model build_model returns (backbone frozen).\n\n--unfreeze shows what an "
        "unfreeze state trains, exactly as ProgressiveUnfreeze applies it; --schedule shows a "
        "schedule stage by stage.",
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
    p.add_argument("--bn", choices=BN_POLICIES, default=None,
                   help="with --unfreeze: how BatchNorm layers of unfrozen blocks train: frozen "
                   "(the default: as loaded), affine (gamma and beta train, moving statistics "
                   "as loaded) or train (training mode)")
    p.add_argument("--train-bn", action="store_true",
                   help="the old spelling of --bn train")
    p.add_argument("--layers", action="store_true", help="add the per-layer table")
    p.add_argument("--schedule", metavar="PRESET|FILE",
                   help="print a ProgressiveUnfreeze schedule stage by stage: a preset "
                   "(gradual, the default of ProgressiveUnfreeze() and fine_tune; two_phase, "
                   "gradual:every=2, fine_tune_at:layer=100, plateau, lp_ft, ulmfit, "
                   "layer_decay) or a JSON file")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="with --schedule: the run's number of epochs")
    p.add_argument("--learning-rate", type=_learning_rate, metavar="LR",
                   help="with --schedule: the optimizer's learning rate, for absolute rates")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_inspect)

    p = verb(
        "bench",
        ["keras-tlft bench mobilenet_v2",
         "keras-tlft bench resnet50 --batch-size 64 --mixed-precision \\\n"
         "    --phases frozen,full",
         "keras-tlft bench mobilenet_v2 --jit both",
         "keras-tlft bench mobilenet_v2 --backend jax --json"],
        help="throughput, memory and stage-change cost per training phase (synthetic data)",
        description="Measure one backbone (+ a GAP head) on synthetic data: frozen, partially "
        "unfrozen, fully unfrozen, inference.\n\nUses the GPU when there is one; on a CPU it "
        "runs with small defaults. Ctrl-C stops it with the phases finished so far.",
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
    p.add_argument("--jit", choices=("auto", "on", "off", "both"), nargs="?", const="on",
                   default="auto",
                   help="XLA: auto (default) is model.compile's own default, i.e. off on a CPU "
                   "with TensorFlow and on PyTorch, on a GPU with TensorFlow and JAX; both "
                   "measures off and on side by side")
    p.add_argument("--no-jit", dest="jit", action="store_const", const="off",
                   help="same as --jit off")
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                   help="the Keras backend (default: KERAS_BACKEND, else tensorflow)")
    p.add_argument("--phases", default="frozen,partial,full,inference",
                   help="comma-separated: frozen, partial, full, inference")
    p.add_argument("--partial", default="1", metavar="SPEC",
                   help="unfreeze spec of the partial phase: k or from:... (default: 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_bench)

    from keras_tlft.cli.lr_find import add_parser as add_lr_find

    add_lr_find(sub)
    return parser


def main(argv=None) -> int:
    parser = make_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(_attach_dash_values(parser, argv))
    err = make_console(stderr=True)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    out = make_console()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _plugin_warnings_to(err, args.command)
            code = args.func(args, out)
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
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


def _plugin_warnings_to(err: Console, command: str):
    """A ``warnings.showwarning`` that reports plugin problems once, as one line of ours on
    stderr (``plugins`` and ``check`` report failures in their own output); other warnings go
    to Python's own."""
    from keras_tlft.backbones.registry import NameCollisionWarning, PluginWarning

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if isinstance(message, NameCollisionWarning):
            err.print(f"[yellow]name collision:[/yellow] {escape(message.collision.message())}",
                      soft_wrap=True)
        elif isinstance(message, PluginWarning):
            if command not in ("plugins", "check"):
                err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def _reader_went_away() -> int:
    """The reader of stdout closed it (``keras-tlft list | head -1``): stop quietly, as ``ls``
    does. Exit 141 (128 + SIGPIPE), the status a shell shows for ``ls`` there, so that a
    ``set -o pipefail`` script sees the same as with any other command, and neither our 0
    (everything printed) nor our 1 (the work failed). As the Python docs advise, stdout is
    pointed at devnull so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a file (a test's)
        pass
    return EXIT_BROKEN_PIPE


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` is one of our deliberate bad-input errors (exit 2), not a failure (exit 1).

    Deliberate ones are :class:`UsageError`, the name-resolution errors, and every
    ``ValueError``/``TypeError`` that keras-tlft's own code raises in Keras's message shape
    (ending with ``Received: name=value``). Anything else, including a ``TypeError`` from a bug in
    our code or an error raised inside Keras or a plugin, is a failure of the work.
    """
    from keras_tlft.backbones.spec import AmbiguousBackboneError, UnknownBackboneError

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

"""``pdsweep``: thin commands over the library. Parse, call one function, print, exit code.

Each command is a small class (:class:`~pdsweep.cli._base.Command`) in :data:`COMMANDS`, in
the module of its layer. Bad input (a flag, a value, a space file, a budget) prints one line
naming the problem and the fix, and exits 2 without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

from pdsweep.cli._base import Command, Parser, UsageError, flag_groups
from pdsweep.cli.cluster import Jobs, Logs, Submit
from pdsweep.cli.cost import Flops, Plan
from pdsweep.cli.results import Report, Ui
from pdsweep.cli.sweep import Resume, Run
from pdsweep.cli.train import Train
from pdsweep.cli.weights import Weights
from pdsweep.errors import PdsweepError

COMMANDS: tuple[type[Command], ...] = (Flops, Plan, Train, Run, Resume, Report, Ui, Submit, Jobs, Logs, Weights)


def build_parser() -> Parser:
    """The ``pdsweep`` parser, every command's subparser on it."""
    parser, _ = _build()
    return parser


def _build() -> tuple[Parser, dict[str, Parser]]:
    from pdsweep import __version__

    groups = flag_groups()
    parser = Parser(prog="pdsweep", description="The most accurate PatchDropout ViT for a compute budget.",
                    parents=[groups["common"]])
    parser.add_argument("--version", action="version", version=f"pdsweep {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Parser] = {}
    for command_class in COMMANDS:
        command = command_class()
        sub = subparsers.add_parser(command.name, help=command.help, description=command.description,
                                    parents=[groups["common"], *(groups[g] for g in command.groups)])
        command.add_arguments(sub)
        sub.set_defaults(command_object=command)
        commands[command.name] = sub
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    inner: list[str] = []
    if "--" in argv:  # `pdsweep submit ... -- run ...`: what follows runs on the cluster
        at = argv.index("--")
        argv, inner = argv[:at], argv[at + 1 :]
    debug = "--debug" in argv
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")  # timm's import
    logging.basicConfig(level=logging.WARNING, format="pdsweep: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines ("Creating tables...") are noise here
    try:
        parser, commands = _build()
        args, extra = parser.parse_known_args(argv)
        if extra:
            (commands[args.command] if args.command else parser).unrecognized(extra)
        if args.command is None:
            raise UsageError("choose a command: " + ", ".join(commands), "pdsweep")
        command: Command = args.command_object
        if inner and not getattr(command, "takes_inner", False):
            commands[args.command].unrecognized(["--", *inner])
        args.inner = inner
        return int(command.take_action(args) or 0)
    except UsageError as error:
        if debug:
            raise
        print(f"{error.prog}: error: {error}; see '{error.prog} --help'.", file=sys.stderr)
        return 2
    except PdsweepError as error:
        if debug:
            raise
        print(f"pdsweep: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdsweep: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


__all__ = ["COMMANDS", "Command", "build_parser", "main"]

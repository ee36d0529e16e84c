"""`python -m xkern COMMAND ...`: one module per command in xkern.cli.

Each xkern/cli/<command>.py defines register(subparsers), which adds its parser and
sets `func` to the function that runs it.  Modules import heavy dependencies
(torch, matplotlib) inside that function only, so `python -m xkern info` stays light.
"""
import argparse
import importlib
import sys

from xkern._extras import MissingExtra

COMMANDS = ("info", "graph", "bench", "train", "compare", "export", "predict", "config")


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m xkern", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"xkern.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"xkern.cli.{name}":
                raise
            continue  # command not part of this build
        module.register(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MissingExtra as exc:  # raised by each command's checks, before it does any work
        print(f"xkern {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

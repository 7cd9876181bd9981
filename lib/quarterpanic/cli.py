"""The ``quarterpanic`` console script.

Each sub-command is a pair of functions in this module: ``_add_<name>``
declares its arguments and ``_cmd_<name>`` runs it and returns the exit code.
User mistakes (:class:`QuarterpanicError`) print one line to stderr and exit
with the error's code (2); programming errors keep their traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys

from quarterpanic import __version__
from quarterpanic.errors import QuarterpanicError

log = logging.getLogger("quarterpanic")

COMMANDS: list[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quarterpanic",
        description="Quarter-end panic detection from CRM pipeline exports.",
    )
    parser.add_argument("--version", action="version", version=f"quarterpanic {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        globals()[f"_add_{name}"](sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = globals()[f"_cmd_{args.command.replace('-', '_')}"]
    try:
        return handler(args)
    except QuarterpanicError as err:
        print(f"quarterpanic {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("quarterpanic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

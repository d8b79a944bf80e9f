"""Run an emulator on its own: `python -m sandbox civicrm|<cms_type> --seed FILE --port N`.

Each emulator module exposes `add_cli(subparsers)`, which adds its subcommand and sets `func`; the
CMS emulators are those of sandbox/emulators.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sandbox import emulators

# Modules that contribute a subcommand, in the order `--help` lists them.
EMULATOR_MODULES = ("sandbox.civicrm", *emulators.cli_modules())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Run a sandbox emulator.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in EMULATOR_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # an emulator that is not there yet simply has no subcommand
            continue
        if hasattr(module, "add_cli"):
            module.add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m sandbox joomla ...`: serve the Joomla emulator on its own until Ctrl-C."""

from __future__ import annotations

import argparse

from sandbox.cli import add_common_options, serve

from .server import JoomlaEmulator


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox joomla ...`."""
    parser = subparsers.add_parser("joomla", help="run the Joomla Web Services users emulator",
                                   description="Serve the Joomla 5.3 Web Services users emulator until Ctrl-C.")
    add_common_options(parser, system="joomla", port=8003)
    parser.add_argument("--language", default="en-GB", help="the API's language (en-GB or fr-FR)")
    parser.add_argument("--mail-to-user", action="store_true",
                        help="leave 'Notification Mail to User' on, as a fresh Joomla has it")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    emulator = JoomlaEmulator(language=args.language, mail_to_user=args.mail_to_user)
    return serve(emulator, args, lambda e: (
        f"Joomla emulator on {e.url} (API {e.api_url}, API token {e.api_token}, {len(e.users)} users)"))

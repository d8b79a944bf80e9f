"""`python -m sandbox wordpress ...`: serve the emulator on its own until Ctrl-C."""

from __future__ import annotations

import argparse

from sandbox.cli import add_common_options, serve

from .server import WordPressEmulator


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox wordpress ...`."""
    parser = subparsers.add_parser("wordpress", help="run the WordPress REST users emulator",
                                   description="Serve the WordPress 6.1 REST users emulator until Ctrl-C.")
    add_common_options(parser, system="wordpress", port=8002)
    parser.add_argument("--login", default="admin", help="the API user's login (user 1)")
    parser.add_argument("--app-password", default="abcd EFGH 1234 ijkl MNOP 5678",
                        help="the application password the API user authenticates with")
    parser.add_argument("--mail-fails", action="store_true", help="make the lostpassword form fail to mail")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    emulator = WordPressEmulator(login=args.login, app_password=args.app_password,
                                 mail_works=not args.mail_fails)
    return serve(emulator, args, lambda e: (
        f"WordPress emulator on {e.url} (REST API {e.rest_url}, login {args.login!r}, {len(e.users)} users)"))

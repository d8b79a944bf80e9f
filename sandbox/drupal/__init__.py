"""Drupal 10.5 JSON:API users emulator (server.py), its command line and its pytest fixtures (testing.py)."""

from __future__ import annotations

import argparse

from sandbox.cli import add_common_options, serve
from sandbox.drupal.server import DrupalEmulator

__all__ = ["DrupalEmulator", "add_cli", "sandbox_connection", "sandbox_site"]


def sandbox_site(secret: str, login: str = "cmsuser_api") -> DrupalEmulator:
    """A fresh site for the sandbox (sandbox/emulators.py): its API user `login` has the password `secret`."""
    return DrupalEmulator(login=login, password=secret)


def sandbox_connection(site: DrupalEmulator) -> dict:
    """The CMS connection's fields for a started site (HTTP Basic as the API user)."""
    return {"host": site.url, "login": site.login, "password": site.password}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox drupal ...`."""
    parser = subparsers.add_parser("drupal", help="run the Drupal JSON:API users emulator",
                                   description="Serve the Drupal 10.5 JSON:API users emulator until Ctrl-C.")
    add_common_options(parser, system="drupal", port=8003)
    parser.add_argument("--login", default="cmsuser_api", help="the API user's name (uid 2)")
    parser.add_argument("--password", default="api-password", help="the API user's password (HTTP Basic)")
    parser.add_argument("--token", default=None, help="an OAuth bearer token that also authenticates the API user")
    parser.add_argument("--mail-fails", action="store_true", help="make the password mail fail")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    emulator = DrupalEmulator(login=args.login, password=args.password, token=args.token,
                              mail_works=not args.mail_fails)
    return serve(emulator, args, lambda e: f"Drupal emulator on {e.url} (JSON:API {e.jsonapi_url}, "
                                           f"API user {args.login!r}, {len(e.users)} users)")

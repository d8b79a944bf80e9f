"""Backdrop through bee: the emulated site (site.py), the emulated `bee` command (bee.py), its command
line and its pytest fixtures (testing.py). No network: the backend runs the emulated bee as a local
command, through a Backdrop connection without a host."""

from __future__ import annotations

import argparse

from sandbox.backdrop.site import BackdropEmulator, sandbox_fields
from sandbox.cli import read_seed

__all__ = ["BackdropEmulator", "add_cli", "sandbox_connection", "sandbox_site"]


def sandbox_site(secret: str) -> BackdropEmulator:
    """A fresh site in a folder of its own. Locally there is no credential to check: `secret` rides in
    the connection's password (unused) so the sandbox's leak checks have something to look for."""
    return BackdropEmulator(secret=secret)


def sandbox_connection(site: BackdropEmulator) -> dict:
    """The CMS connection's fields: no host (bee runs locally), extras site_root, bee_path, base_url."""
    return sandbox_fields(site)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m sandbox backdrop ...`."""
    parser = subparsers.add_parser("backdrop", help="make an emulated Backdrop site folder and its bee",
                                   description="Make (or reuse) an emulated Backdrop site folder, seed it, and print "
                                               "the CMS connection (type backdrop, bee run locally).")
    parser.add_argument("--folder", required=True, help="the site folder (kept; made when missing)")
    parser.add_argument("--seed", help="YAML/JSON seed file (its `backdrop:` part, when present)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    site = BackdropEmulator(args.folder)
    if args.seed:
        site.seed(read_seed(args.seed, "backdrop"))
    print(site.connection())
    return 0

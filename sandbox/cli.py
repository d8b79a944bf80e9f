"""What the sandbox's command lines share: the emulators' seed/host/port options and serving until Ctrl-C, and
SIGTERM cleaning up as Ctrl-C does (for the benchmarks, which start real sites and Airflow stacks)."""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import yaml


def add_common_options(parser: argparse.ArgumentParser, *, system: str, port: int) -> None:
    parser.add_argument("--seed", help=f"YAML/JSON seed file (its `{system}:` part, when present)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)


def read_seed(path: str | Path, system: str) -> dict:
    """A YAML or JSON seed file's part for `system` (its `<system>:` key when present, else all of it)."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if isinstance(data, dict) and system in data:
        data = data[system]
    return data or {}


def serve(emulator, args: argparse.Namespace, describe) -> int:
    """Seed, start, print where it listens (`describe(emulator)`), block until Ctrl-C, stop."""
    if args.seed:
        emulator.seed_file(args.seed)
    emulator.start(args.host, args.port)
    print(f"{describe(emulator)}; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM (`kill`, `timeout`, a CI's cancel) end this process as Ctrl-C does: `finally` blocks run.
    Real sites and Airflow stacks run in sessions of their own, so without this a terminated benchmark left
    them running. A second SIGTERM during that clean-up ends the process at once."""
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)

"""What every emulator's command line shares: the seed/host/port options and serving until Ctrl-C."""

from __future__ import annotations

import argparse
import json
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

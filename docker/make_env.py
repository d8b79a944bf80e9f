"""Write .env for docker-compose.yaml from .env.example, filling the secrets with random values.

    python3 docker/make_env.py [--example .env.example] [--output .env] [--force]

Only the secrets that are empty in the example are generated; every other line is copied as it is.
The file is created with mode 0600 and no secret is ever printed: read them from the file.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fernet_key() -> str:
    # Fernet wants exactly 32 random bytes in URL-safe base64.
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def url_safe_token() -> str:
    # Letters, digits, '-' and '_' only: safe inside a database URL and unquoted in .env.
    return secrets.token_urlsafe(32)


#: The variables this script generates, and how.
GENERATED: dict[str, Callable[[], str]] = {
    "POSTGRES_PASSWORD": url_safe_token,
    "AIRFLOW_FERNET_KEY": fernet_key,
    "AIRFLOW_JWT_SECRET": url_safe_token,
    "AIRFLOW_API_SECRET_KEY": url_safe_token,
    "_AIRFLOW_WWW_USER_PASSWORD": url_safe_token,
}

_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def render(example_text: str, uid: int | None) -> tuple[str, list[str]]:
    """The .env text for an example text, and the names whose values were generated."""
    out: list[str] = []
    generated: list[str] = []
    for line in example_text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            name, value = match["name"], match["value"].strip()
            if name in GENERATED and value in ("", "''", '""'):
                line = f"{name}={GENERATED[name]()}"
                generated.append(name)
            elif name == "AIRFLOW_UID" and uid is not None:
                line = f"{name}={uid}"
        out.append(line)
    return "\n".join(out) + "\n", generated


def write_private(path: Path, text: str, overwrite: bool) -> None:
    # Created 0600 from the start, so the secrets are never readable by others, not even briefly.
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def host_uid() -> int | None:
    """The caller's uid on Linux (so ./logs stays theirs), or None to keep the example's value."""
    if sys.platform.startswith("linux") and hasattr(os, "getuid") and os.getuid() != 0:
        return os.getuid()
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=REPO / ".env.example", help="template (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPO / ".env", help="file to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file (new secrets!)")
    args = parser.parse_args(argv)

    if not args.example.is_file():
        print(f"error: template {args.example} not found; run from the repository or pass --example", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(
            f"error: {args.output} exists and was left alone. Its Fernet key decrypts the stored "
            "connections, so replacing it loses them; pass --force only if that is what you want.",
            file=sys.stderr,
        )
        return 1

    text, generated = render(args.example.read_text(encoding="utf-8"), host_uid())
    write_private(args.output, text, overwrite=args.force)
    names = ", ".join(generated) if generated else "nothing (no empty secret in the template)"
    print(f"wrote {args.output} (mode 0600); generated {names}. Values are not shown: read them from the file.")
    print("Next: edit AIRFLOW_CONN_CIVICRM_DEFAULT / AIRFLOW_CONN_CMS_DEFAULT for real sites, then `docker compose up -d`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

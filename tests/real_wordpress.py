"""The real WordPress tier for tests: start it once per session, reset it before each test.

Helpers (usable from any test or conftest):

* start_real_wordpress() -> state dict (url, rest_url, login, app_password, admin_password,
  mail_log, mail_fail_flag, ...), running sandbox/real_wordpress/start.sh when needed;
* reset_real_wordpress(): every user but the API user deleted, captured mail emptied, mail works;
* stop_real_wordpress(): sandbox/real_wordpress/stop.sh (stops only what start.sh started);
* read_mails(state), set_mail_works(state, works).

Fixture `real_wordpress` (session scope): the state dict. When WordPress cannot be started the
test is skipped, or fails when CMSUSER_REQUIRE_REAL=1 (CI). The session stops the PHP server at
the end only if the session started it; a server that was already running stays up.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "sandbox" / "real_wordpress"
HOST = "127.0.0.1"
START_TIMEOUT = 900  # a first start installs packages


class RealWordPressUnavailable(RuntimeError):
    """start.sh failed; the message holds the tail of its output (it never prints passwords)."""


def state_dir() -> Path:
    return Path(os.environ.get("CMSUSER_WP_STATE", "/tmp/cmsuser-real-wp"))


def _read_state() -> dict | None:
    path = state_dir() / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_running() -> bool:
    """True when a start.sh server of ours is up (state file present and its PHP server alive)."""
    state = _read_state()
    if not state or not state.get("pid"):
        return False
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError):
        return False
    return True


def start_real_wordpress() -> dict:
    """Run start.sh (idempotent) and return the state it wrote."""
    try:
        result = subprocess.run([str(SCRIPTS / "start.sh")], capture_output=True, text=True,
                                timeout=START_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RealWordPressUnavailable(f"start.sh could not run: {exc}") from exc
    state = _read_state()
    if result.returncode != 0 or state is None:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-8:]
        raise RealWordPressUnavailable(f"start.sh exited {result.returncode}: " + " | ".join(tail))
    return state


def reset_real_wordpress(state: dict | None = None) -> None:
    state = state or _read_state() or {}
    login = state.get("login", "admin")
    subprocess.run(["php", str(SCRIPTS / "reset.php"), HOST, login], check=True, capture_output=True,
                   text=True, timeout=60)


def stop_real_wordpress() -> None:
    subprocess.run([str(SCRIPTS / "stop.sh")], check=False, capture_output=True, text=True, timeout=60)


def read_mails(state: dict) -> list[dict]:
    path = Path(state["mail_log"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def set_mail_works(state: dict, works: bool) -> None:
    """The test mu-plugin makes wp_mail() fail while the flag file exists."""
    flag = Path(state["mail_fail_flag"])
    if works:
        flag.unlink(missing_ok=True)
    else:
        flag.touch()


def require_real() -> bool:
    return os.environ.get("CMSUSER_REQUIRE_REAL") == "1"


@pytest.fixture(scope="session")
def real_wordpress():
    """Session-wide real WordPress (state dict); skipped, or failed under CMSUSER_REQUIRE_REAL=1."""
    was_running = is_running()
    try:
        state = start_real_wordpress()
    except RealWordPressUnavailable as exc:
        if require_real():
            pytest.fail(f"real WordPress is required (CMSUSER_REQUIRE_REAL=1) but did not start: {exc}")
        pytest.skip(f"real WordPress not available: {exc}")
    yield state
    if not was_running:
        stop_real_wordpress()

"""WordPress test fixtures: the real WordPress tier (started once per session, reset before each
test) and `wordpress_site`, one site object over the emulator or the real thing.

Helpers (usable from any test or conftest):

* start_real_wordpress() -> state dict (url, rest_url, login, app_password, admin_password,
  mail_log, mail_fail_flag, ...), running sandbox/real_wordpress/start.sh when needed;
* reset_real_wordpress(): every user but the API user deleted, captured mail emptied, mail works;
* stop_real_wordpress(): sandbox/real_wordpress/stop.sh (stops only what start.sh started);
* read_mails(state), set_mail_works(state, works).

Fixtures (import them into a test module or conftest, e.g. `real_wordpress = wp.real_wordpress`):

* `real_wordpress` (session scope): the state dict. When WordPress cannot be started the test is
  skipped, or fails when CMSUSER_REQUIRE_REAL=1 (CI). The PHP server is stopped at the end only if
  this session started it; a server that was already running stays up.
* `wordpress_site`: parametrised over ["emulator", "real"] (the real one marked real_wordpress);
  a clean site with url, rest_url, login, app_password, mails(), reset(), set_mail_works().
* `wordpress` (a started emulator) and `cms_conn` (AIRFLOW_CONN_CMS_DEFAULT pointing at it).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.wordpress import WordPressEmulator

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "sandbox" / "real_wordpress"
HOST = "127.0.0.1"
START_TIMEOUT = 900  # a first start installs packages
EMULATOR_APP_PASSWORD = "abcd EFGH 1234 ijkl MNOP 5678"


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


# ----------------------------------------------------------------------------- one site, two kinds


@dataclass
class WordPressSite:
    """What a contract test needs from a site, whichever kind it is."""

    kind: str
    url: str
    rest_url: str
    login: str
    app_password: str
    admin_email: str
    account_password: str | None  # the API user's real login password (the emulator has none)
    _mails: Callable[[], list[dict]]
    _reset: Callable[[], None]
    _mail_works: Callable[[bool], None]

    def mails(self) -> list[dict]:
        """Password mails sent so far: dicts with at least user_login, to, user_id."""
        return self._mails()

    def reset(self) -> None:
        self._reset()

    def set_mail_works(self, works: bool) -> None:
        self._mail_works(works)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.login, self.app_password)

    def __repr__(self) -> str:  # never show the application password in test output
        return f"WordPressSite(kind={self.kind!r}, url={self.url!r})"


def emulator_site(emulator: WordPressEmulator) -> WordPressSite:
    def reset() -> None:
        for user in emulator.users:
            if user["id"] != 1:
                emulator._delete_user(user["id"])
        emulator.mails.clear()
        emulator.mail_works = True

    def mail_works(works: bool) -> None:
        emulator.mail_works = works

    return WordPressSite(kind="emulator", url=emulator.url, rest_url=emulator.rest_url, login=emulator.login,
                         app_password=EMULATOR_APP_PASSWORD, admin_email=emulator.admin_email,
                         account_password=None, _mails=lambda: [dict(m) for m in emulator.mails],
                         _reset=reset, _mail_works=mail_works)


def real_site(state: dict) -> WordPressSite:
    return WordPressSite(kind="real", url=state["url"], rest_url=state["rest_url"], login=state["login"],
                         app_password=state["app_password"], admin_email=state["admin_email"],
                         account_password=state.get("admin_password") or None,
                         _mails=lambda: read_mails(state), _reset=lambda: reset_real_wordpress(state),
                         _mail_works=lambda works: set_mail_works(state, works))


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.real_wordpress)])
def wordpress_site(request):
    """A clean WordPress (only the API user, user 1; no mail captured; mail works)."""
    if request.param == "emulator":
        with WordPressEmulator(login="admin", app_password=EMULATOR_APP_PASSWORD) as emulator:
            yield emulator_site(emulator)
        return
    state = request.getfixturevalue("real_wordpress")
    site = real_site(state)
    site.reset()
    yield site
    site.set_mail_works(True)


@pytest.fixture
def wordpress():
    """A started WordPress emulator (function scope); the API user is admin / EMULATOR_APP_PASSWORD."""
    with WordPressEmulator(login="admin", app_password=EMULATOR_APP_PASSWORD) as emulator:
        yield emulator


@pytest.fixture
def cms_conn(wordpress, monkeypatch):
    """AIRFLOW_CONN_CMS_DEFAULT pointing at the `wordpress` emulator (no Airflow DB needed); the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", json.dumps({
        "conn_type": "http", "host": wordpress.url, "login": "admin", "password": EMULATOR_APP_PASSWORD}))
    return "cms_default"

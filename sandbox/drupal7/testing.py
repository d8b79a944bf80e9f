"""pytest fixtures around the Drupal 7 emulator and the real Drupal 7; test modules import them by name.

`drupal7`        a started emulator (function scope); API user cmsuser_api / EMULATOR_PASSWORD
`drupal7_conn`   AIRFLOW_CONN_CMS_DEFAULT (type drupal7) pointing at that emulator; the conn id
`real_drupal7`   a real Drupal 7 + Services for the whole session (sandbox/real_drupal7, ~5 s to start), from
                 the archives in ../shared/thirdparty (or $CMSUSER_THIRDPARTY); skipped with the reason when
                 it cannot start, a failure under CMSUSER_REQUIRE_REAL=1
`drupal7_site`   the contract suite's sites: the emulator and that real Drupal 7, one interface (Drupal7Site)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sandbox import realsite
from sandbox.drupal7.server import API_PERMISSIONS, Drupal7Emulator

EMULATOR_PASSWORD = "api-password"
__all__ = ["API_PERMISSIONS", "Drupal7Site", "connection_json", "drupal7", "drupal7_conn", "drupal7_site",
           "real_drupal7"]


@pytest.fixture
def drupal7():
    """A started emulator; fails the test if the emulator itself raised."""
    with Drupal7Emulator(password=EMULATOR_PASSWORD) as emulator:
        yield emulator
    if emulator.internal_errors:
        raise AssertionError(f"the Drupal 7 emulator raised: {emulator.internal_errors!r}")


def connection_json(url: str, login: str, password: str, endpoint: str = "api", **extra) -> str:
    return json.dumps({"conn_type": "drupal7", "host": url, "login": login, "password": password,
                       "extra": {"endpoint": endpoint, **extra}})


@pytest.fixture
def drupal7_conn(drupal7, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal7.url, drupal7.login, EMULATOR_PASSWORD))
    return "cms_default"


real_drupal7 = realsite.session_fixture("real_drupal7", "RealDrupal7")


@dataclass
class Drupal7Site:
    """What a contract test needs from a site, whichever kind it is."""

    kind: str
    url: str
    login: str
    password: str
    _mails: Callable[[], list[dict]]
    _permissions: Callable[[list[str]], None]
    _register: Callable[[int], None]
    _expire: Callable[[], None]
    endpoint: str = "api"

    def mails(self) -> list[dict]:
        """Mails sent since the reset: dicts with at least `to` and `subject`."""
        return self._mails()

    def set_permissions(self, permissions: list[str]) -> None:
        self._permissions(list(permissions))

    def set_register(self, mode: int) -> None:
        """Drupal's user_register: 0 administrators only, 1 visitors, 2 visitors with approval."""
        self._register(mode)

    def expire_sessions(self) -> None:
        self._expire()

    def connection(self, **extra) -> str:
        return connection_json(self.url, self.login, self.password, self.endpoint, **extra)

    def __repr__(self) -> str:  # never show the password in test output
        return f"Drupal7Site(kind={self.kind!r}, url={self.url!r})"


def emulator_site(emulator: Drupal7Emulator) -> Drupal7Site:
    def register(mode: int) -> None:
        emulator.register = mode

    return Drupal7Site(kind="emulator", url=emulator.url, login=emulator.login, password=EMULATOR_PASSWORD,
                       _mails=lambda: [dict(m) for m in emulator.mails], _permissions=emulator.set_permissions,
                       _register=register, _expire=emulator.expire_sessions)


def real_site(real) -> Drupal7Site:
    return Drupal7Site(kind="real", url=real.base_url, login=real.api_login, password=real.api_password,
                       _mails=real.mails, _permissions=real.set_permissions,
                       _register=lambda mode: real.set_variable("user_register", mode), _expire=real.expire_sessions,
                       endpoint=real.endpoint)


# (a `real_drupal7` marker on the real param awaits its line in pyproject.toml's markers)
@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.real_drupal7)])
def drupal7_site(request):
    """A clean Drupal 7: admin (uid 1) and the API user (uid 2); no mail captured; defaults restored."""
    if request.param == "emulator":
        with Drupal7Emulator(password=EMULATOR_PASSWORD) as emulator:
            yield emulator_site(emulator)
        if emulator.internal_errors:
            raise AssertionError(f"the Drupal 7 emulator raised: {emulator.internal_errors!r}")
        return
    real = request.getfixturevalue("real_drupal7")
    real.reset()
    try:
        yield real_site(real)
    finally:
        real.reset()

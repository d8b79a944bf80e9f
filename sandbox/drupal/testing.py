"""pytest fixtures around the Drupal emulator and the real Drupal; test modules import them by name.

`drupal`        a started emulator (function scope); API user cmsuser_api / EMULATOR_PASSWORD
`drupal_conn`   AIRFLOW_CONN_CMS_DEFAULT (type drupal) pointing at that emulator; the conn id
`real_drupal`   a real Drupal 10.5 for the whole session (sandbox/real_drupal, ~30 s to start), from the
                archive in ../shared/thirdparty (or $CMSUSER_THIRDPARTY); skipped with the reason when it
                cannot start, a failure under CMSUSER_REQUIRE_REAL=1
`drupal_site`   the contract suite's sites: the emulator and that real Drupal, one interface (DrupalSite)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sandbox import realsite
from sandbox.drupal.server import DrupalEmulator

EMULATOR_PASSWORD = "api-password"
API_PERMISSIONS = ("administer users", "administer permissions")
SITE_NAME = "cmsuser real Drupal"  # the real site's name too (sandbox/real_drupal/install.php)


@pytest.fixture
def drupal():
    """A started emulator; fails the test if the emulator itself raised."""
    with DrupalEmulator(password=EMULATOR_PASSWORD) as emulator:
        yield emulator
    if emulator.internal_errors:
        raise AssertionError(f"the Drupal emulator raised: {emulator.internal_errors!r}")


def connection_json(url: str, login: str, password: str, **extra) -> str:
    return json.dumps({"conn_type": "drupal", "host": url, "login": login, "password": password, "extra": extra})


@pytest.fixture
def drupal_conn(drupal, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(drupal.url, drupal.login, EMULATOR_PASSWORD))
    return "cms_default"


real_drupal = realsite.session_fixture("real_drupal", "RealDrupal")


@dataclass
class DrupalSite:
    """What a contract test needs from a site, whichever kind it is."""

    kind: str
    url: str
    login: str
    password: str
    admin_login: str
    _mails: Callable[[], list[dict]]
    _reset: Callable[[], None]
    _mail_works: Callable[[bool], None]
    _permissions: Callable[[list[str]], None]
    _read_only: Callable[[bool], None]

    @property
    def jsonapi_url(self) -> str:
        return self.url + "/jsonapi"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.login, self.password)

    def mails(self) -> list[dict]:
        """Mails sent since the reset: dicts with at least `to` and `subject`."""
        return self._mails()

    def reset(self) -> None:
        self._reset()

    def set_mail_works(self, works: bool) -> None:
        self._mail_works(works)

    def set_permissions(self, permissions: list[str]) -> None:
        self._permissions(list(permissions))

    def set_read_only(self, read_only: bool) -> None:
        self._read_only(read_only)

    def connection(self, **extra) -> str:
        return connection_json(self.url, self.login, self.password, **extra)

    def __repr__(self) -> str:  # never show the password in test output
        return f"DrupalSite(kind={self.kind!r}, url={self.url!r})"


def emulator_site(emulator: DrupalEmulator) -> DrupalSite:
    def read_only(value: bool) -> None:
        emulator.read_only = value

    def mail_works(value: bool) -> None:
        emulator.mail_works = value

    return DrupalSite(kind="emulator", url=emulator.url, login=emulator.login, password=EMULATOR_PASSWORD,
                      admin_login="admin", _mails=lambda: [dict(m) for m in emulator.mails], _reset=lambda: None,
                      _mail_works=mail_works, _permissions=emulator.set_permissions, _read_only=read_only)


def real_site(real) -> DrupalSite:
    return DrupalSite(kind="real", url=real.base_url, login=real.api_login, password=real.api_password,
                      admin_login=real.state["admin"]["login"], _mails=real.mails, _reset=real.reset,
                      _mail_works=real.set_mail_works, _permissions=real.set_permissions,
                      _read_only=lambda value: real.set_config("jsonapi.settings", "read_only", value))


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.real_drupal)])
def drupal_site(request):
    """A clean Drupal: admin (uid 1) and the API user (uid 2); no mail captured; mail works."""
    if request.param == "emulator":
        with DrupalEmulator(password=EMULATOR_PASSWORD, site_name=SITE_NAME) as emulator:
            yield emulator_site(emulator)
        if emulator.internal_errors:
            raise AssertionError(f"the Drupal emulator raised: {emulator.internal_errors!r}")
        return
    real = request.getfixturevalue("real_drupal")
    site = real_site(real)
    site.reset()
    try:
        yield site
    finally:
        site.set_mail_works(True)
        site.reset()

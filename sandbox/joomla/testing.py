"""pytest fixtures for Joomla: the emulator, the real Joomla tier, and one site object over both.

`joomla`        a started emulator (function scope, ~ms)
`joomla_conn`   AIRFLOW_CONN_CMS_DEFAULT (type joomla) for that emulator's API user; the conn id
`real_joomla`   a real Joomla 5.3.1 for the whole session (sandbox/real_joomla, ~3 s), from the archive
                in ../shared/thirdparty (or $CMSUSER_THIRDPARTY); skipped with the reason when it
                cannot start, a failure under CMSUSER_REQUIRE_REAL=1
`joomla_site`   parametrised over the emulator and the real site (marked real_joomla): a clean
                site with the same handles on both (JoomlaSite)

Import them into a test module: `from sandbox.joomla.testing import joomla, joomla_site, real_joomla`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from sandbox import realsite
from sandbox.joomla.server import JoomlaEmulator


@pytest.fixture
def joomla():
    with JoomlaEmulator() as emulator:
        yield emulator


def connection_json(base_url: str, token: str, **extra) -> str:
    return json.dumps({"conn_type": "joomla", "host": base_url, "password": token, "extra": extra})


@pytest.fixture
def joomla_conn(joomla, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", connection_json(joomla.url, joomla.api_token))
    return "cms_default"


real_joomla = realsite.session_fixture("real_joomla", "RealJoomla")


@dataclass
class JoomlaSite:
    """What a contract test needs from a site, whichever kind it is."""

    kind: str
    base_url: str
    api_url: str
    token: str
    admin_token: str
    api_user: dict                              # {"id", "login", "email"}
    _mails: Callable[[], list[dict]]
    _switch: dict[str, Callable] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show tokens in test output
        return f"JoomlaSite(kind={self.kind!r}, base_url={self.base_url!r})"

    def mails(self) -> list[dict]:
        """Mails the site sent: dicts with at least "to", "subject" and "body"."""
        return self._mails()

    def set_mail_to_user(self, on: bool) -> None:
        self._switch["mail_to_user"](on)

    def set_api_can_create(self, allowed: bool) -> None:
        self._switch["can_create"](allowed)

    def set_language(self, tag: str | None) -> None:
        self._switch["language"](tag)

    def add_group(self, title: str, parent_id: int = 1) -> int:
        return self._switch["add_group"](title, parent_id)


def emulator_site(emulator: JoomlaEmulator) -> JoomlaSite:
    def language(tag):
        emulator.store.language = tag or "en-GB"

    def mail_to_user(on):
        emulator.store.mail_to_user = on

    return JoomlaSite(
        kind="emulator", base_url=emulator.url, api_url=emulator.api_url, token=emulator.api_token,
        admin_token=emulator.admin_token,
        api_user={"id": 43, "login": "airflow_api", "email": "airflow-api@example.test"},
        _mails=lambda: [dict(m) for m in emulator.mails],
        _switch={"mail_to_user": mail_to_user, "can_create": emulator.set_api_can_create, "language": language,
                 "add_group": emulator.add_group})


def real_site(real) -> JoomlaSite:
    return JoomlaSite(
        kind="real", base_url=real.base_url, api_url=real.api_url, token=real.api_token,
        admin_token=real.admin_token,
        api_user={"id": int(real.api_user["id"]), "login": real.api_user["login"], "email": real.api_user["email"]},
        _mails=real.mails,
        _switch={"mail_to_user": real.set_mail_to_user, "can_create": real.set_api_can_create,
                 "language": real.set_api_language, "add_group": real.add_group})


@pytest.fixture(params=["emulator", pytest.param("real", marks=pytest.mark.real_joomla)])
def joomla_site(request):
    """A clean Joomla: the Super User and the API user only, no mail captured, mail_to_user off."""
    if request.param == "emulator":
        with JoomlaEmulator() as emulator:
            yield emulator_site(emulator)
        return
    real = request.getfixturevalue("real_joomla")
    real.reset()
    yield real_site(real)
    real.reset()

"""The emulated CiviCRM and CMS, seeded and started with fresh random credentials, and the connections to them.

One place for what the demo, the end-to-end tests, the real-Airflow tier and the benchmark all do.
The CMS is the emulator of the settings' `cms_type` (sandbox/emulators.py), seeded from the seed's
`<cms_type>:` section (`wordpress:` for WordPress).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sandbox import emulators, local_airflow
from sandbox.apart import Apart
from sandbox.civicrm import CiviCRMEmulator

DEMO_SEED = Path(__file__).with_name("demo_seed.yaml")
DEFAULT_CMS_TYPE = "wordpress"
CMS_LOGIN = "admin"  # the CMS API user's login


@dataclass
class Sites:
    civicrm: CiviCRMEmulator
    cms: Any  # the emulator of cms_type, e.g. a WordPressEmulator
    secrets: dict[str, str]  # api_key, site_key, app_password (the CMS secret): for leak checks, never printed
    cms_type: str = DEFAULT_CMS_TYPE
    cms_connection: dict = field(default_factory=dict)  # host, login, password, extra of the CMS connection

    @property
    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_CIVICRM_DEFAULT and AIRFLOW_CONN_CMS_DEFAULT (of type cms_type) for these two sites."""
        cms = self.cms_connection
        return local_airflow.connection_env(self.civicrm.url, self.secrets["api_key"], self.secrets["site_key"],
                                            cms["host"], cms.get("login") or "", cms["password"],
                                            cms_type=self.cms_type, cms_extra=cms.get("extra"))


def demo_seed() -> dict:
    return yaml.safe_load(DEMO_SEED.read_text())


@contextmanager
def started_sites(seed: dict | None = None, host: str = "127.0.0.1",
                  cms_type: str = DEFAULT_CMS_TYPE, *, apart: bool = False) -> Iterator[Sites]:
    """CiviCRM and the emulator of `cms_type`, seeded (default: the demo seed) and listening on free
    ports; stopped on exit. The CMS's API user is `CMS_LOGIN` with the password secrets["app_password"].

    `apart`: each emulator in a process of its own (sandbox/apart.py), as real sites are, for measurements;
    the handles then run methods and read attributes in those processes."""
    emulator = emulators.package(cms_type)
    seed = demo_seed() if seed is None else seed
    creds = {"api_key": secrets.token_hex(16), "site_key": secrets.token_hex(16),
             "app_password": secrets.token_hex(12)}

    def build_civicrm():
        civicrm = CiviCRMEmulator(api_key=creds["api_key"], site_key=creds["site_key"])
        civicrm.seed(seed.get("civicrm", {}))
        civicrm.start(host)
        return civicrm, {"url": civicrm.url}

    def build_cms():
        cms = emulator.sandbox_site(creds["app_password"])
        cms.seed(seed.get(cms_type, {}))
        cms.start(host)
        return cms, {"url": cms.url, "connection": emulator.sandbox_connection(cms)}

    started = []
    try:
        for build, name in ((build_civicrm, "civicrm"), (build_cms, cms_type)):
            started.append(Apart(build, name) if apart else _Here(*build()))
        civicrm, cms = started
        connection = cms.facts["connection"]
        creds["app_password"] = connection["password"]  # the CMS's own, where it makes it (Joomla's token)
        yield Sites(civicrm.emulator, cms.emulator, creds, cms_type, connection)
    finally:
        for site in reversed(started):
            site.stop()


class _Here:
    """An emulator started in this process (the default): the same face as an Apart one."""

    def __init__(self, emulator, facts: dict):
        self.emulator, self.facts = emulator, facts

    def stop(self) -> None:
        self.emulator.stop()

"""Both emulated sites, seeded and started with fresh random credentials, and the connections to them.

One place for what the demo, the end-to-end tests, the real-Airflow tier and the benchmark all do.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.wordpress import WordPressEmulator

DEMO_SEED = Path(__file__).with_name("demo_seed.yaml")


@dataclass
class Sites:
    civicrm: CiviCRMEmulator
    wordpress: WordPressEmulator
    secrets: dict[str, str]  # api_key, site_key, app_password: for leak checks, never for printing

    @property
    def connection_env(self) -> dict[str, str]:
        """AIRFLOW_CONN_CIVICRM_DEFAULT and AIRFLOW_CONN_CMS_DEFAULT for these two sites."""
        return local_airflow.connection_env(self.civicrm.url, self.secrets["api_key"], self.secrets["site_key"],
                                            self.wordpress.url, "admin", self.secrets["app_password"])


def demo_seed() -> dict:
    return yaml.safe_load(DEMO_SEED.read_text())


@contextmanager
def started_sites(seed: dict | None = None, host: str = "127.0.0.1") -> Iterator[Sites]:
    """Both emulators seeded (default: the demo seed) and listening on free ports; stopped on exit."""
    seed = demo_seed() if seed is None else seed
    creds = {"api_key": secrets.token_hex(16), "site_key": secrets.token_hex(16),
             "app_password": secrets.token_hex(12)}
    with CiviCRMEmulator(api_key=creds["api_key"], site_key=creds["site_key"]) as civicrm, \
            WordPressEmulator(login="admin", app_password=creds["app_password"]) as wordpress:
        civicrm.seed(seed.get("civicrm", {}))
        wordpress.seed(seed.get("wordpress", {}))
        civicrm.start(host)
        wordpress.start(host)
        yield Sites(civicrm, wordpress, creds)

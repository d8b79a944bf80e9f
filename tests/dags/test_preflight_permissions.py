"""Pre-flight names each CiviCRM permission the API contact lacks, on the emulator and on a real CiviCRM.

The documented permissions (README, "What the API users need") are the ones the tests' API user
holds on the real site; each that no other implies is removed in turn.
"""

from __future__ import annotations

import pytest
import yaml

from civicrm_hooks.hook import REQUIRED_PERMISSIONS
from tests.dags.conftest import BASE_SETTINGS

pytestmark = pytest.mark.slow


def _without_site_key(monkeypatch) -> None:
    """'authenticate with api key' is AuthX's guard: a connection that sends the site key passes without it."""
    import json
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_CIVICRM_DEFAULT"])
    conn["extra"].pop("site_key", None)
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", json.dumps(conn))


def _preflight_failure() -> str:
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline import tasks

    with pytest.raises(AirflowFailException) as failed:
        tasks.preflight.function(params={"dry_run": True})
    return str(failed.value)


@pytest.mark.parametrize("removed", REQUIRED_PERMISSIONS)
def test_the_emulator_preflight_names_a_missing_permission(sandbox, monkeypatch, removed):
    _without_site_key(monkeypatch)
    sandbox.civicrm.set_permissions([p for p in REQUIRED_PERMISSIONS if p != removed])
    message = _preflight_failure()
    assert f"'{removed}'" in message  # (without 'administer CiviCRM' the site also loses 'access CiviCRM',
    # which it implies, so the other checks fail too and are named as well)


@pytest.mark.real_civicrm
@pytest.mark.parametrize("removed", REQUIRED_PERMISSIONS)
def test_the_real_civicrm_preflight_names_a_missing_permission(real_civicrm, airflow_db, monkeypatch, tmp_path,
                                                                removed):
    monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", real_civicrm.civicrm_connection())
    monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", real_civicrm.wordpress_connection())
    settings = tmp_path / "cmsuser.yaml"
    settings.write_text(yaml.safe_dump(BASE_SETTINGS))
    monkeypatch.setenv("CMSUSER_SETTINGS", str(settings))
    _without_site_key(monkeypatch)
    real_civicrm.set_permissions([p for p in REQUIRED_PERMISSIONS if p != removed])
    try:
        message = _preflight_failure()
    finally:
        real_civicrm.set_permissions(REQUIRED_PERMISSIONS)
    assert f"'{removed}'" in message  # (without 'administer CiviCRM' the site also loses 'access CiviCRM',
    # which it implies, so the other checks fail too and are named as well)


def test_the_documented_permissions_are_the_ones_the_real_site_gives_the_api_user():
    from pathlib import Path

    script = (Path(__file__).resolve().parents[2] / "sandbox/real_civicrm/start.sh").read_text()
    listed = "API_PERMISSIONS=(" + " ".join(f'"{p}"' for p in REQUIRED_PERMISSIONS) + ")"
    assert listed in script
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"`{p}`" in readme for p in REQUIRED_PERMISSIONS)

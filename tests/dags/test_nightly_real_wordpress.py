"""The nightly DAG end to end against a real WordPress (Debian's package on PHP 8.2 and MariaDB);
CiviCRM is still the emulator. Accounts are really created, with the configured role, and linked."""

from __future__ import annotations

import secrets

import pytest
import requests
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import BASE_SETTINGS, Sandbox
from tests.real_wordpress import read_mails, real_wordpress  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.real_wordpress, pytest.mark.slow]

EXISTING = [  # accounts the site already has, as in the demo seed
    {"username": "jane.doe", "email": "jane.doe@example.org", "password": "Jane-Pass-1", "roles": ["subscriber"]},
    {"username": "john.smith", "email": "jsmith@elsewhere.example", "password": "John-Pass-1",
     "roles": ["subscriber"]},
]


def _users(state) -> list[dict]:
    users, page = [], 1
    while True:
        answer = requests.get(f"{state['rest_url']}/wp/v2/users", timeout=30,
                              params={"context": "edit", "per_page": 100, "page": page},
                              auth=(state["login"], state["app_password"]))
        answer.raise_for_status()
        users += answer.json()
        if page >= int(answer.headers["X-WP-TotalPages"]):
            return users
        page += 1


@pytest.fixture
def real_sandbox(real_wordpress, airflow_db, monkeypatch, tmp_path):  # noqa: F811
    from tests.real_wordpress import reset_real_wordpress

    reset_real_wordpress(real_wordpress)
    for user in EXISTING:
        requests.post(f"{real_wordpress['rest_url']}/wp/v2/users", json=user, timeout=30,
                      auth=(real_wordpress["login"], real_wordpress["app_password"])).raise_for_status()
    seed = yaml.safe_load(DEMO_SEED.read_text())["civicrm"]
    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with CiviCRMEmulator(api_key=api_key, site_key=site_key) as civicrm:
        civicrm.seed(seed)
        civicrm.start()
        env = local_airflow.connection_env(civicrm.url, api_key, site_key, real_wordpress["url"],
                                           real_wordpress["login"], real_wordpress["app_password"])
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings_file = tmp_path / "cmsuser.yaml"
        monkeypatch.setenv("CMSUSER_SETTINGS", str(settings_file))
        box = Sandbox(civicrm, None, settings_file, {"api_key": api_key, "site_key": site_key})
        box.configure(**BASE_SETTINGS)
        yield box, real_wordpress


def test_accounts_created_linked_and_existing_left_alone(real_sandbox):
    box, state = real_sandbox
    jane_before = next(u for u in _users(state) if u["username"] == "jane.doe")
    run, outcomes = box.run()
    assert str(run.state).endswith("success")
    users = {u["username"]: u for u in _users(state)}
    links = box.ufmatch()
    created = {cid: row for cid, row in outcomes.items() if row["outcome"] == "created"}
    assert sorted(row["username"] for row in created.values()) == [
        "ada.lovelace", "alan.turing", "grace.hopper", "john.smith2", "sam.family", "zoe.angstrom"]
    for cid, row in created.items():
        account = users[row["username"]]
        assert account["roles"] == ["member"]
        assert links[cid]["uf_id"] == account["id"] == row["uf_id"]
        assert links[cid]["uf_name"].lower() == account["email"].lower()
        assert box.activities(cid)[0]["subject"] == f"Created : {row['username']} ({account['id']})"

    # the existing account: linked, and nothing about it changed
    assert outcomes[6]["outcome"] == "linked_existing"
    jane_after = users["jane.doe"]
    assert links[6]["uf_id"] == jane_after["id"]
    assert {k: jane_after[k] for k in ("email", "roles", "name")} == {k: jane_before[k] for k in ("email", "roles",
                                                                                                  "name")}
    # one password mail per created account, none for do_not_email (Grace)
    mailed = sorted(m["user_login"] for m in read_mails(state))
    assert mailed == sorted(row["username"] for row in created.values() if row["username"] != "grace.hopper")


def test_second_run_creates_nothing_new(real_sandbox):
    box, state = real_sandbox
    box.run()
    before = {u["id"] for u in _users(state)}
    run, outcomes = box.run()
    assert str(run.state).endswith("success")
    assert {u["id"] for u in _users(state)} == before
    assert {row["outcome"] for row in outcomes.values()} == {"failed"}

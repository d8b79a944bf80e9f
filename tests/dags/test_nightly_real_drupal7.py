"""The nightly DAG end to end (dag.test) against a real Drupal 7.101 + Services 7.x-3.20 (sandbox/real_drupal7:
REST server with session login and X-CSRF-Token, PHP's built-in server on MariaDB); CiviCRM is the emulator
with the demo seed's contacts.

Accounts are really created, active, with the configured role (`member`), the configured user field
(`field_member_number`) and the contact's preferred language where the site has it (fr), linked, and mailed
Drupal 7's own "An administrator created an account for you" mail (captured on the site itself). The site
is reset before each test; the demo seed's `drupal7:` accounts (larry, jane.doe, john.smith) are then made
on it through the endpoint as uid 1, plus a `site boss` account (a role of the `admin_roles` setting) whose
email is a triggered contact's.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import pytest
import requests

from tests.dags import real_nightly
from tests.dags.real_nightly import CREATED, EMAILS, MAILED, mail_address

pytestmark = [pytest.mark.real_drupal7, pytest.mark.slow]

CREATE_PATH = "/api/user.json"
EXISTING = real_nightly.accounts_with_boss("site boss")  # the demo seed's drupal7 section, and the.boss


class Services:
    """The site's Services endpoint with one login (uid 1's for seeding, the API user's for reading)."""

    def __init__(self, site, login: str, password: str):
        self.site = site
        self.base = f"{site.base_url}/{site.endpoint}"
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        answer = self.http.post(f"{self.base}/user/login.json", json={"username": login, "password": password},
                                timeout=30)
        assert answer.status_code == 200, answer.text[:300]
        self.http.headers["X-CSRF-Token"] = answer.json()["token"]

    def create(self, name: str, mail: str, roles=()) -> int:
        rids = {str(self.site.roles[r]): str(self.site.roles[r]) for r in roles}
        answer = self.http.post(f"{self.base}/user.json", timeout=30, json={
            "name": name, "mail": mail, "pass": secrets.token_hex(12), "status": 1, "roles": rids})
        assert answer.status_code == 200, answer.text[:500]
        return int(answer.json()["uid"])

    def users(self) -> dict[str, dict]:
        """Every account but the anonymous one by name, as GET user/<uid> shows it (roles as names)."""
        found: dict[str, dict] = {}
        page = 0
        while True:
            rows = self.http.get(f"{self.base}/user.json", timeout=30, params={
                "fields": "uid", "page": page, "options[orderby][uid]": "ASC"}).json()
            for row in rows:
                if row["uid"] != "0":
                    user = self.http.get(f"{self.base}/user/{row['uid']}.json", timeout=30).json()
                    user["roles"] = sorted(n for n in user["roles"].values() if n != "authenticated user")
                    user.pop("access", None)  # the API user's own session times move with every login
                    user.pop("login", None)
                    found[user["name"]] = user
            if len(rows) < 20:
                return found
            page += 1


@dataclass
class Drupal7Box(real_nightly.RealBoxWithBoss):
    api: Services           # the API user's login (what the pipeline uses)

    def uid(self, account: dict) -> int:
        return int(account["uid"])

    def connection(self, host: str) -> str:
        return real_nightly.cms_connection(host, self.site.api_login, self.site.api_password, "drupal7",
                                           endpoint=self.site.endpoint)


@pytest.fixture
def real_sandbox(real_drupal7, airflow_db, monkeypatch, tmp_path):
    real_drupal7.reset()
    admin = Services(real_drupal7, real_drupal7.state["admin"]["login"], real_drupal7.state["admin"]["password"])
    existing = {account["name"]: admin.create(**account) for account in EXISTING}
    settings = {"user_fields": {"field_member_number": "M{contact_id}"}, "sync_preferred_language": True,
                "admin_roles": ["administrator", "site boss"]}
    with real_nightly.real_box(Drupal7Box, real_drupal7, real_nightly.seed_with_boss(existing["larry"]),
                               monkeypatch, tmp_path, settings, existing=existing,
                               api=Services(real_drupal7, real_drupal7.api_login, real_drupal7.api_password)) as real:
        real.connect(real.connection(real_drupal7.base_url))
        yield real
    real_drupal7.reset()


def _member_number(user: dict) -> str | None:
    items = (user.get("field_member_number") or {}).get("und") if isinstance(user.get("field_member_number"), dict) \
        else None
    return items[0]["value"] if items else None


def test_accounts_created_with_role_field_language_linked_and_mailed(real_sandbox):
    real = real_sandbox
    before = real.api.users()
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)

    users = real.api.users()
    real.created_linked(users, outcomes)
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] == "1" and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert _member_number(account) == f"M{cid}"
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (nothing sent: the site's default)
    assert users["ada.lovelace"]["language"] == "fr"
    assert {users[name]["language"] for cid, name in CREATED.items() if cid != 2} == {"en"}
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    real.existing_left_alone(before, users, outcomes)

    # exactly one welcome mail per new account, none for Grace (do_not_email), none for anyone else
    assert real.mails_by_address() == MAILED
    for mail in real.site.mails():
        assert mail["subject"] == "An administrator created an account for you at cmsuser real Drupal 7"
        address = mail_address(mail)
        uid = next(users[n]["uid"] for c, n in CREATED.items() if EMAILS[c] == address)
        assert re.search(rf"/user/reset/{uid}/\d+/\S+", mail["body"]), address


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Drupal makes the account, and the client's connection is dropped."""
    from provisioning import outcomes as outcomes_text

    real = real_sandbox
    _, outcomes = real.lose_a_create_answer(CREATE_PATH, probe_status=406, created_status=200)
    assert outcomes[2]["reason"] == outcomes_text.found_after_doubt()
    users = real.api.users()
    (ada,) = real.with_email(users, "ada@example.org")
    assert ada["name"] == "ada.lovelace" and ada["roles"] == ["member"] and _member_number(ada) == "M2"
    real.one_account_each(users)
    assert real.mails_by_address() == MAILED


def test_duplicate_email_taken_after_planning_is_linked(real_sandbox):
    """Somebody registers with Alan's email (in other case) between the plan and his create: Drupal 7
    refuses the create (406 on mail), the batch looks the email up and links that account."""
    from cms_operators.drupal7.backend import Drupal7Backend

    real = real_sandbox
    admin = Services(real.site, real.site.state["admin"]["login"], real.site.state["admin"]["password"])
    real.email_taken_after_planning(Drupal7Backend, lambda: admin.create("alan.elsewhere", "Alan@Example.org"))
    users = real.api.users()
    assert "alan.turing" not in users
    assert _member_number(users["alan.elsewhere"]) is None  # not ours: nothing set on it


def test_second_run_creates_nothing_new(real_sandbox):
    real = real_sandbox
    real.box.run()
    real.second_run_changes_nothing(real.api.users)

"""The nightly DAG end to end (dag.test) against a real Joomla 5.3.1 (sandbox/real_joomla, PHP's
built-in server on MariaDB); CiviCRM is the emulator with the demo seed's contacts.

Accounts are really created in the configured group, linked, and mailed Joomla's own password-reset
mail, captured on the site itself. The site is reset before each test; a group "member" (below
Registered) is made for `roles: [member]`, and the demo seed's existing accounts (jane.doe,
john.smith) are created on it first with the Super User's token. Contact ids are those of
sandbox/demo_seed.yaml (see tests/dags/test_nightly.py).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests

from tests.dags import real_nightly
from tests.dags.real_nightly import CREATED, EMAILS, MAILED

pytestmark = [pytest.mark.real_joomla, pytest.mark.slow]

EXISTING = [  # accounts the site already has, as in the demo seed's joomla section (group 2: Registered)
    {"name": "Jane Doe", "username": "jane.doe", "email": "jane.doe@example.org"},
    {"name": "John Smith", "username": "john.smith", "email": "jsmith@elsewhere.example"},
]


class Api:
    """The site's users API with one token (the Super User's for seeding, the API user's for reading)."""

    def __init__(self, site, token: str):
        self.url = site.api_url + "/v1/users"
        self.session = requests.Session()
        self.session.headers.update({"X-Joomla-Token": token, "Accept": "application/vnd.api+json"})

    def create(self, name: str, username: str, email: str, groups=("2",)) -> int:
        password = secrets.token_urlsafe(18) + "-Aa1!"
        answer = self.session.post(self.url, timeout=30, json={
            "name": name, "username": username, "email": email, "password": password, "password2": password,
            "groups": list(groups), "block": "0", "sendEmail": "0", "requireReset": "0"})
        assert answer.status_code == 200, answer.text
        return int(answer.json()["data"]["id"])

    def users(self) -> dict[str, dict]:
        """Every account by username, with its group ids (GET /v1/users, then each by id)."""
        answer = self.session.get(self.url, params={"page[limit]": 1000}, timeout=30)
        answer.raise_for_status()
        return {row["attributes"]["username"]: self.user(int(row["attributes"]["id"]))
                for row in answer.json()["data"]}

    def user(self, user_id: int) -> dict:
        answer = self.session.get(f"{self.url}/{user_id}", timeout=30)
        answer.raise_for_status()
        attributes = dict(answer.json()["data"]["attributes"])
        attributes["groups"] = sorted(int(g) for g in (attributes.get("groups") or {}).values())
        return attributes


@dataclass
class JoomlaBox(real_nightly.RealBox):
    api: Api                # with the API user's token (what the pipeline uses)
    admin: Api              # with the Super User's token (seeding only)
    member_group: int

    mail_field = "email"

    def uid(self, account: dict) -> int:
        return account["id"]

    def connection(self, host: str) -> str:
        return real_nightly.cms_connection(host, "", self.site.api_token, "joomla")


@pytest.fixture
def real_sandbox(real_joomla, airflow_db, monkeypatch, tmp_path):
    real_joomla.reset()
    member = real_joomla.add_group("member", parent_id=2)
    admin = Api(real_joomla, real_joomla.admin_token)
    for account in EXISTING:
        admin.create(**account)
    with real_nightly.real_box(JoomlaBox, real_joomla, real_nightly.demo_seed(), monkeypatch, tmp_path, {},
                               api=Api(real_joomla, real_joomla.api_token), admin=admin,
                               member_group=member) as real:
        real.connect(real.connection(real_joomla.base_url))
        yield real
    real_joomla.reset()


@pytest.fixture
def passwords(monkeypatch) -> list[str]:
    """Every password the backend makes up for a new account (dag.test runs the tasks in this process)."""
    from cms_operators.joomla import backend

    made: list[str] = []
    original = backend.random_password

    def recorded() -> str:
        made.append(original())
        return made[-1]

    monkeypatch.setattr(backend, "random_password", recorded)
    return made


def test_accounts_created_in_the_group_linked_mailed_and_existing_left_alone(real_sandbox, passwords):
    real = real_sandbox
    before = real.api.users()
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)

    users = real.api.users()
    real.created_linked(users, outcomes)
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["groups"] == [real.member_group]
        assert account["email"].lower() == EMAILS[cid] and account["block"] == 0
        assert links[cid]["uf_name"].lower() == EMAILS[cid]
    assert len(users) == len(before) + len(CREATED)  # nothing else was made (Adam, Alex, ... got nothing)

    # the existing account: linked (the contact's email differs only in case), and nothing about it changed
    assert links[6]["uf_id"] == users["jane.doe"]["id"]
    assert users["jane.doe"] == before["jane.doe"]  # every attribute: groups, name, reset count, block, ...
    assert users["john.smith"] == before["john.smith"]

    # exactly one reset mail per new account, none for Grace (do_not_email), none for anyone else
    assert real.mails_by_address() == MAILED
    for cid in CREATED:
        if cid != 3:
            assert users[CREATED[cid]]["resetCount"] == 1
    assert users["grace.hopper"]["resetCount"] == 0
    # ... and no captured mail holds a password: the reset mail has a code, never the one we set
    assert len(passwords) == len(CREATED)
    mails = real.site.mails()
    for mail in mails:
        assert re.search(r"\b[0-9a-f]{32}\b", mail["body"])  # the verification code
        for password in passwords:
            assert password not in mail["raw"]
    assert not any(re.search(r"(?i)\b(password|mot de passe)\s*:", m["body"]) for m in mails)


def test_an_existing_email_with_on_existing_email_fail_is_not_linked(real_sandbox):
    real = real_sandbox
    real.box.configure(on_existing_email="fail")
    before = real.api.users()["jane.doe"]
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success")
    assert outcomes[6]["outcome"] == "failed" and "jane.doe" in outcomes[6]["reason"]
    assert 6 not in real.box.ufmatch()
    after = real.api.users()
    assert real.with_email(after, "jane.doe@example.org") == [after["jane.doe"]]
    assert after["jane.doe"] == before
    assert "jane.doe@example.org" not in real.mails_by_address()


def test_an_email_taken_on_the_site_after_planning_is_refused_by_joomla_and_linked(real_sandbox):
    """Somebody registers with Alan's email between the plan and his create: the real Joomla refuses
    the create (email in use), the batch looks the email up and links that account as existing."""
    from cms_operators.joomla.backend import JoomlaBackend

    real = real_sandbox
    real.email_taken_after_planning(
        JoomlaBackend, lambda: real.admin.create("Alan Elsewhere", "alan.elsewhere", "Alan@Example.org"))
    users = real.api.users()
    assert "alan.turing" not in users
    assert [u["username"] for u in real.with_email(users, "alan@example.org")] == ["alan.elsewhere"]
    assert users["alan.elsewhere"]["resetCount"] == 0


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Joomla makes the account, and the client's connection is dropped."""
    real = real_sandbox
    create_path = urlsplit(real.site.api_url).path + "/v1/users"
    _, outcomes = real.lose_a_create_answer(create_path, probe_status=400, created_status=200)
    users = real.api.users()
    (ada,) = real.with_email(users, "ada@example.org")
    assert ada["username"] == "ada.lovelace" and ada["groups"] == [real.member_group]
    assert real.box.ufmatch()[2]["uf_id"] == ada["id"] == outcomes[2]["uf_id"]
    real.one_account_each(users)
    assert real.mails_by_address() == MAILED


def test_second_run_creates_nothing_new(real_sandbox):
    real = real_sandbox
    real.box.run()
    real.second_run_changes_nothing(lambda: {u["id"] for u in real.api.users().values()})

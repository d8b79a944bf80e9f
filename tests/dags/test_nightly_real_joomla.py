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
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.faultproxy import FaultProxy
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import BASE_SETTINGS, Sandbox

pytestmark = [pytest.mark.real_joomla, pytest.mark.slow]

EXISTING = [  # accounts the site already has, as in the demo seed's joomla section (group 2: Registered)
    {"name": "Jane Doe", "username": "jane.doe", "email": "jane.doe@example.org"},
    {"name": "John Smith", "username": "john.smith", "email": "jsmith@elsewhere.example"},
]
CREATED = {2: "ada.lovelace", 3: "grace.hopper", 4: "alan.turing", 5: "zoe.angstrom", 11: "sam.family",
           16: "john.smith2"}
EMAILS = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
          6: "jane.doe@example.org", 11: "family@example.org", 16: "john.smith@example.org"}
FAILED = {8: "no primary email", 9: "invalid email", 10: "invalid email 'lena.", 12: "contact 11", 13: "deceased",
          14: "administrator"}  # 14: admin@example.test is the site's Super User


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
class RealBox:
    box: Sandbox
    site: object            # sandbox.real_joomla.RealJoomla
    api: Api                # with the API user's token (what the pipeline uses)
    admin: Api              # with the Super User's token (seeding only)
    member_group: int
    stack: ExitStack
    monkeypatch: pytest.MonkeyPatch

    def through_proxy(self) -> FaultProxy:
        """A FaultProxy in front of the site; the CMS connection's host now points at it."""
        proxy = self.stack.enter_context(FaultProxy(self.site.base_url))
        self._connect(proxy.url)
        return proxy

    def _connect(self, host: str) -> None:
        env = local_airflow.connection_env(self.box.civicrm.url, self.box.secrets["api_key"],
                                           self.box.secrets["site_key"], host, "", self.site.api_token,
                                           cms_type="joomla")
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)

    def outcomes_ok(self, run, outcomes) -> None:
        assert str(run.state).endswith("success")
        assert {cid: row["username"] for cid, row in outcomes.items() if row["outcome"] == "created"} == CREATED
        for cid, words in FAILED.items():
            assert outcomes[cid]["outcome"] == "failed" and words in outcomes[cid]["reason"], outcomes[cid]
        assert outcomes[7]["outcome"] == "already_linked"

    def mails_by_address(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for mail in self.site.mails():
            (address,) = re.findall(r"[\w.+-]+@[\w.-]+", mail["to"])
            found[address.lower()] = found.get(address.lower(), 0) + 1
        return found


@pytest.fixture
def real_sandbox(real_joomla, airflow_db, monkeypatch, tmp_path):
    real_joomla.reset()
    member = real_joomla.add_group("member", parent_id=2)
    admin = Api(real_joomla, real_joomla.admin_token)
    for account in EXISTING:
        admin.create(**account)
    seed = yaml.safe_load(DEMO_SEED.read_text())["civicrm"]
    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with ExitStack() as stack:
        civicrm = stack.enter_context(CiviCRMEmulator(api_key=api_key, site_key=site_key))
        civicrm.seed(seed)
        civicrm.start()
        settings_file = tmp_path / "cmsuser.yaml"
        monkeypatch.setenv("CMSUSER_SETTINGS", str(settings_file))
        box = Sandbox(civicrm, None, settings_file, {"api_key": api_key, "site_key": site_key})
        box.configure(**BASE_SETTINGS)
        real = RealBox(box, real_joomla, Api(real_joomla, real_joomla.api_token), admin, member, stack, monkeypatch)
        real._connect(real_joomla.base_url)
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
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["groups"] == [real.member_group]
        assert account["email"].lower() == EMAILS[cid] and account["block"] == 0
        assert links[cid]["uf_id"] == account["id"] == outcomes[cid]["uf_id"]
        assert links[cid]["uf_name"].lower() == EMAILS[cid]
        assert real.box.activities(cid)[0]["subject"] == f"Created : {username} ({account['id']})"
    assert len(users) == len(before) + len(CREATED)  # nothing else was made (Adam, Alex, ... got nothing)

    # the existing account: linked (the contact's email differs only in case), and nothing about it changed
    assert outcomes[6]["outcome"] == "linked_existing" and outcomes[6]["username"] == "jane.doe"
    assert links[6]["uf_id"] == users["jane.doe"]["id"]
    assert users["jane.doe"] == before["jane.doe"]  # every attribute: groups, name, reset count, block, ...
    assert users["john.smith"] == before["john.smith"]

    # exactly one reset mail per new account, none for Grace (do_not_email), none for anyone else
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
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
    assert [u for u in after.values() if u["email"].lower() == "jane.doe@example.org"] == [after["jane.doe"]]
    assert after["jane.doe"] == before
    assert "jane.doe@example.org" not in real.mails_by_address()


def test_an_email_taken_on_the_site_after_planning_is_refused_by_joomla_and_linked(real_sandbox, monkeypatch):
    """Somebody registers with Alan's email between the plan and his create: the real Joomla refuses
    the create (email in use), the batch looks the email up and links that account as existing."""
    from cms_operators.joomla.backend import JoomlaBackend

    real = real_sandbox
    original = JoomlaBackend.create_user
    raced: list[int] = []

    def create_user(self, **kwargs):
        if kwargs["email"].lower() == "alan@example.org" and not raced:
            raced.append(real.admin.create("Alan Elsewhere", "alan.elsewhere", "Alan@Example.org"))
        return original(self, **kwargs)

    monkeypatch.setattr(JoomlaBackend, "create_user", create_user)
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success") and raced
    assert (outcomes[4]["outcome"], outcomes[4]["username"], outcomes[4]["uf_id"]) == (
        "linked_existing", "alan.elsewhere", raced[0])
    assert real.box.ufmatch()[4]["uf_id"] == raced[0]
    users = real.api.users()
    assert "alan.turing" not in users
    assert [u["username"] for u in users.values() if u["email"].lower() == "alan@example.org"] == ["alan.elsewhere"]
    assert users["alan.elsewhere"]["resetCount"] == 0 and "alan@example.org" not in real.mails_by_address()
    assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == set(CREATED) - {4}


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Joomla makes the account, and the client's connection is dropped."""
    real = real_sandbox
    proxy = real.through_proxy()
    create_path = urlsplit(real.site.api_url).path + "/v1/users"
    proxy.inject(method="POST", path=create_path, body_contains="ada@example.org", lose_answer=True, times=1)

    run, outcomes = real.box.run()

    real.outcomes_ok(run, outcomes)
    assert proxy.pending_faults == 0
    creates = [(c.lost, c.target_status) for c in proxy.calls if c.method == "POST" and c.path == create_path]
    # pre-flight's probe (refused by design: it creates nothing), then one post per account, Ada's lost: no second
    assert creates[0] == (False, 400)
    assert sorted(creates[1:]) == [(False, 200)] * (len(CREATED) - 1) + [(True, 200)]
    users = real.api.users()
    (ada,) = [u for u in users.values() if u["email"].lower() == "ada@example.org"]
    assert ada["username"] == "ada.lovelace" and ada["groups"] == [real.member_group]
    links = real.box.ufmatch()
    assert links[2]["uf_id"] == ada["id"] == outcomes[2]["uf_id"]
    for cid, username in CREATED.items():  # every account linked, one per email
        assert links[cid]["uf_id"] == users[username]["id"]
        assert len([u for u in users.values() if u["email"].lower() == EMAILS[cid]]) == 1
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}


def test_second_run_creates_nothing_new(real_sandbox):
    real = real_sandbox
    real.box.run()
    before = {u["id"] for u in real.api.users().values()}
    mails = len(real.site.mails())
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success")
    assert {u["id"] for u in real.api.users().values()} == before
    assert len(real.site.mails()) == mails
    assert {row["outcome"] for row in outcomes.values()} == {"failed"}
    assert all(row["attempt"] == 2 for row in outcomes.values())

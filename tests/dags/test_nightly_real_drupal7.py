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
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import requests
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.faultproxy import FaultProxy
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import BASE_SETTINGS, Sandbox

pytestmark = [pytest.mark.real_drupal7, pytest.mark.slow]

CREATE_PATH = "/api/user.json"
EXISTING = [  # the demo seed's drupal7 section, and an administrator (role "site boss") with a contact's email
    {"name": "larry", "mail": "larry@example.org", "roles": ["member"]},
    {"name": "jane.doe", "mail": "jane.doe@example.org"},
    {"name": "john.smith", "mail": "jsmith@elsewhere.example"},
    {"name": "the.boss", "mail": "boss@example.org", "roles": ["site boss"]},
]
BOSS = {"id": 17, "first_name": "Bea", "last_name": "Boss", "email": "Boss@Example.org"}
CREATED = {2: "ada.lovelace", 3: "grace.hopper", 4: "alan.turing", 5: "zoe.angstrom", 11: "sam.family",
           16: "john.smith2"}
EMAILS = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
          6: "jane.doe@example.org", 11: "family@example.org", 16: "john.smith@example.org"}
FAILED = {8: "no primary email", 9: "invalid email", 10: "invalid email 'lena.", 12: "contact 11", 13: "deceased",
          14: "administrator", 17: "administrator"}  # 14: admin@example.test is uid 1; 17: the site boss
LANGUAGES = {2: "fr_FR", 4: "de_DE"}  # the site has en and fr


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
class RealBox:
    box: Sandbox
    site: object              # sandbox.real_drupal7.RealDrupal7
    api: Services             # the API user's login (what the pipeline uses)
    existing: dict[str, int]  # name -> uid of the accounts made before the run
    stack: ExitStack
    monkeypatch: pytest.MonkeyPatch

    def through_proxy(self) -> FaultProxy:
        proxy = self.stack.enter_context(FaultProxy(self.site.base_url))
        self.connect(proxy.url)
        return proxy

    def connect(self, host: str) -> None:
        env = local_airflow.connection_env(self.box.civicrm.url, self.box.secrets["api_key"],
                                           self.box.secrets["site_key"], host, self.site.api_login,
                                           self.site.api_password, cms_type="drupal7",
                                           cms_extra={"endpoint": self.site.endpoint})
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)

    def outcomes_ok(self, run, outcomes) -> None:
        assert str(run.state).endswith("success")
        assert {cid: row["username"] for cid, row in outcomes.items() if row["outcome"] == "created"} == CREATED
        for cid, words in FAILED.items():
            assert outcomes[cid]["outcome"] == "failed" and words in outcomes[cid]["reason"], outcomes[cid]
        assert outcomes[7]["outcome"] == "already_linked"
        assert outcomes[6]["outcome"] == "linked_existing" and outcomes[6]["username"] == "jane.doe"

    def mails_by_address(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for mail in self.site.mails():
            (address,) = re.findall(r"[\w.+-]+@[\w.-]+", mail["to"])
            found[address.lower()] = found.get(address.lower(), 0) + 1
        return found


@pytest.fixture
def real_sandbox(real_drupal7, airflow_db, monkeypatch, tmp_path):
    real_drupal7.reset()
    admin = Services(real_drupal7, real_drupal7.state["admin"]["login"], real_drupal7.state["admin"]["password"])
    existing = {account["name"]: admin.create(**account) for account in EXISTING}
    seed = yaml.safe_load(DEMO_SEED.read_text())["civicrm"]
    for contact in seed["contacts"]:
        if contact["id"] in LANGUAGES:
            contact["preferred_language"] = LANGUAGES[contact["id"]]
    seed["contacts"].append(dict(BOSS))
    seed["group_contacts"].append({"group_id": 5, "contact_id": BOSS["id"], "status": "Added"})
    (larry,) = seed["uf_matches"]
    larry["uf_id"] = existing["larry"]
    api_key, site_key = secrets.token_hex(16), secrets.token_hex(16)
    with ExitStack() as stack:
        civicrm = stack.enter_context(CiviCRMEmulator(api_key=api_key, site_key=site_key))
        civicrm.seed(seed)
        civicrm.start()
        settings_file = tmp_path / "cmsuser.yaml"
        monkeypatch.setenv("CMSUSER_SETTINGS", str(settings_file))
        box = Sandbox(civicrm, None, settings_file, {"api_key": api_key, "site_key": site_key})
        box.configure(**BASE_SETTINGS, user_fields={"field_member_number": "M{contact_id}"},
                      sync_preferred_language=True, admin_roles=["administrator", "site boss"])
        real = RealBox(box, real_drupal7, Services(real_drupal7, real_drupal7.api_login, real_drupal7.api_password),
                       existing, stack, monkeypatch)
        real.connect(real_drupal7.base_url)
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
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] == "1" and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert _member_number(account) == f"M{cid}"
        assert links[cid]["uf_id"] == int(account["uid"]) == outcomes[cid]["uf_id"]
        assert real.box.activities(cid)[0]["subject"] == f"Created : {username} ({account['uid']})"
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (nothing sent: the site's default)
    assert users["ada.lovelace"]["language"] == "fr"
    assert {users[name]["language"] for cid, name in CREATED.items() if cid != 2} == {"en"}
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    # the existing account: linked (the contact's email differs only in case), and nothing about it changed
    assert links[6]["uf_id"] == real.existing["jane.doe"] == outcomes[6]["uf_id"]
    for name in ("jane.doe", "john.smith", "larry", "the.boss", "admin"):
        assert users[name] == before[name], name
    assert links[7]["uf_id"] == real.existing["larry"]
    # administrators are never linked: uid 1 (Adam's email) and the site boss (Bea's)
    assert 14 not in links and 17 not in links
    assert str(real.existing["the.boss"]) in outcomes[17]["reason"]

    # exactly one welcome mail per new account, none for Grace (do_not_email), none for anyone else
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
    for mail in real.site.mails():
        assert mail["subject"] == "An administrator created an account for you at cmsuser real Drupal 7"
        (address,) = re.findall(r"[\w.+-]+@[\w.-]+", mail["to"])
        uid = next(users[n]["uid"] for c, n in CREATED.items() if EMAILS[c] == address.lower())
        assert re.search(rf"/user/reset/{uid}/\d+/\S+", mail["body"]), address


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Drupal makes the account, and the client's connection is dropped."""
    from provisioning import outcomes as outcomes_text

    real = real_sandbox
    proxy = real.through_proxy()
    proxy.inject(method="POST", path=CREATE_PATH, body_contains="ada@example.org", lose_answer=True, times=1)

    run, outcomes = real.box.run()

    real.outcomes_ok(run, outcomes)
    assert proxy.pending_faults == 0
    creates = [(c.lost, c.target_status) for c in proxy.calls if c.method == "POST" and c.path == CREATE_PATH]
    # pre-flight's probe (no name, no mail: refused by design), then one post per account, Ada's lost and
    # never sent again
    assert creates[0] == (False, 406)
    assert sorted(creates[1:]) == [(False, 200)] * (len(CREATED) - 1) + [(True, 200)]
    assert outcomes[2]["reason"] == outcomes_text.found_after_doubt()
    users = real.api.users()
    (ada,) = [u for u in users.values() if u["mail"].lower() == "ada@example.org"]
    assert ada["name"] == "ada.lovelace" and ada["roles"] == ["member"] and _member_number(ada) == "M2"
    links = real.box.ufmatch()
    for cid, username in CREATED.items():  # every account linked, one per email
        assert links[cid]["uf_id"] == int(users[username]["uid"])
        assert len([u for u in users.values() if u["mail"].lower() == EMAILS[cid]]) == 1
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}


def test_duplicate_email_taken_after_planning_is_linked(real_sandbox, monkeypatch):
    """Somebody registers with Alan's email (in other case) between the plan and his create: Drupal 7
    refuses the create (406 on mail), the batch looks the email up and links that account."""
    from cms_operators.drupal7.backend import Drupal7Backend

    real = real_sandbox
    admin = Services(real.site, real.site.state["admin"]["login"], real.site.state["admin"]["password"])
    original = Drupal7Backend.create_user
    raced: list[int] = []

    def create_user(self, **kwargs):
        if kwargs["email"].lower() == "alan@example.org" and not raced:
            raced.append(admin.create("alan.elsewhere", "Alan@Example.org"))
        return original(self, **kwargs)

    monkeypatch.setattr(Drupal7Backend, "create_user", create_user)
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success") and raced
    assert (outcomes[4]["outcome"], outcomes[4]["username"], outcomes[4]["uf_id"]) == (
        "linked_existing", "alan.elsewhere", raced[0])
    users = real.api.users()
    assert "alan.turing" not in users
    assert _member_number(users["alan.elsewhere"]) is None  # not ours: nothing set on it
    assert "alan@example.org" not in real.mails_by_address()


def test_second_run_creates_nothing_new(real_sandbox):
    real = real_sandbox
    real.box.run()
    before = real.api.users()
    mails = len(real.site.mails())
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success")
    assert real.api.users() == before
    assert len(real.site.mails()) == mails
    assert {row["outcome"] for row in outcomes.values()} == {"failed"}
    assert all(row["attempt"] == 2 for row in outcomes.values())

"""The nightly DAG end to end (dag.test) against a real Drupal 10.5 (sandbox/real_drupal: core JSON:API
with HTTP Basic auth, PHP's built-in server on MariaDB); CiviCRM is the emulator with the demo seed's
contacts.

Accounts are really created, active, with the configured role (`member`) and the configured user
field (`field_member_number`), in the contact's preferred language where the site has it, linked,
and mailed Drupal's own password-reset mail (captured on the site itself). The site is reset before
each test; the demo seed's `drupal:` accounts (larry, jane.doe, john.smith) are then created on it
with the site administrator's login, plus a `site_boss` (an is_admin role) account whose email is a
triggered contact's. Contact ids are those of sandbox/demo_seed.yaml (see tests/dags/test_nightly.py);
the seed copy adds that contact (17) and gives Ada a French and Alan a German preferred language.

Drupal's uids are never reused (the users table auto-increments across resets), so Larry's link is
pointed at the uid his account really got.
"""

from __future__ import annotations

import re
import secrets
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
import requests
import yaml

from sandbox import local_airflow
from sandbox.civicrm import CiviCRMEmulator
from sandbox.faultproxy import FaultProxy
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import BASE_SETTINGS, Sandbox

pytestmark = [pytest.mark.real_drupal, pytest.mark.slow]

JSONAPI = "application/vnd.api+json"
USERS_PATH = "/jsonapi/user/user"
#: The API user's default permissions, and the optional one that lets it read the site's languages.
DEFAULT_PERMISSIONS = ["administer users", "administer permissions"]
WITH_LANGUAGES = [*DEFAULT_PERMISSIONS, "administer languages"]

EXISTING = [  # the demo seed's drupal section, and an administrator (role site_boss) with a contact's email
    {"name": "larry", "mail": "larry@example.org", "roles": ["member"]},
    {"name": "jane.doe", "mail": "jane.doe@example.org"},
    {"name": "john.smith", "mail": "jsmith@elsewhere.example"},
    {"name": "the.boss", "mail": "boss@example.org", "roles": ["site_boss"]},
]
BOSS = {"id": 17, "first_name": "Bea", "last_name": "Boss", "email": "Boss@Example.org"}
CREATED = {2: "ada.lovelace", 3: "grace.hopper", 4: "alan.turing", 5: "zoe.angstrom", 11: "sam.family",
           16: "john.smith2"}
EMAILS = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
          6: "jane.doe@example.org", 11: "family@example.org", 16: "john.smith@example.org"}
FAILED = {8: "no primary email", 9: "invalid email", 10: "invalid email 'lena.", 12: "contact 11", 13: "deceased",
          14: "administrator", 17: "administrator"}  # 14: admin@example.test is uid 1; 17: the site_boss
LANGUAGES = {2: "fr_FR", 4: "de_DE"}  # the site has en and fr


class Api:
    """The site's JSON:API users with one login (the site administrator's for seeding, the API user's
    for reading what the pipeline did)."""

    def __init__(self, site, auth: tuple[str, str]):
        self.site = site
        self.url = site.base_url + USERS_PATH
        self.session = requests.Session()
        self.session.auth = auth
        self.session.headers.update({"Accept": JSONAPI})

    def create(self, name: str, mail: str, roles=()) -> int:
        data: dict = {"type": "user--user", "attributes": {"name": name, "mail": mail, "status": True}}
        if roles:
            data["relationships"] = {"roles": {"data": [
                {"type": "user_role--user_role", "id": self.site.roles[role]["uuid"]} for role in roles]}}
        answer = self.session.post(self.url, json={"data": data}, timeout=30, headers={"Content-Type": JSONAPI})
        assert answer.status_code == 201, answer.text[:500]
        return int(answer.json()["data"]["attributes"]["drupal_internal__uid"])

    def users(self) -> dict[str, dict]:
        """Every account but the anonymous one by name: its attributes, `roles` (machine names) added."""
        found: dict[str, dict] = {}
        url, params = self.url, {"page[limit]": 50, "sort": "drupal_internal__uid"}
        while url:
            answer = self.session.get(url, params=params, timeout=30)
            answer.raise_for_status()
            document = answer.json()
            for item in document["data"]:
                attributes = dict(item["attributes"])
                if not attributes.get("drupal_internal__uid"):
                    continue  # uid 0
                attributes["roles"] = sorted(r["meta"]["drupal_internal__target_id"]
                                             for r in item["relationships"]["roles"]["data"])
                found[attributes["name"]] = attributes
            url, params = (document.get("links") or {}).get("next", {}).get("href"), None
        return found


@dataclass
class RealBox:
    box: Sandbox
    site: object            # sandbox.real_drupal.RealDrupal
    api: Api                # with the API user's login (what the pipeline uses)
    admin: Api              # with uid 1's login (seeding only)
    existing: dict[str, int]  # name -> uid of the accounts made before the run
    stack: ExitStack
    monkeypatch: pytest.MonkeyPatch

    def through_proxy(self) -> FaultProxy:
        """A FaultProxy in front of the site; the CMS connection's host now points at it."""
        proxy = self.stack.enter_context(FaultProxy(self.site.base_url))
        self._connect(proxy.url)
        return proxy

    def _connect(self, host: str) -> None:
        env = local_airflow.connection_env(self.box.civicrm.url, self.box.secrets["api_key"],
                                           self.box.secrets["site_key"], host, self.site.api_login,
                                           self.site.api_password, cms_type="drupal")
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
def real_sandbox(real_drupal, airflow_db, monkeypatch, tmp_path):
    real_drupal.reset()
    admin = Api(real_drupal, real_drupal.admin_auth)
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
                      sync_preferred_language=True)
        real = RealBox(box, real_drupal, Api(real_drupal, real_drupal.api_auth), admin, existing, stack,
                       monkeypatch)
        real._connect(real_drupal.base_url)
        yield real
    real_drupal.set_mail_works(True)
    real_drupal.reset()


def test_accounts_created_active_in_the_role_with_fields_language_linked_and_mailed(real_sandbox):
    real = real_sandbox
    real.site.set_permissions(WITH_LANGUAGES)  # the API user may read the site's languages (en, fr)
    before = real.api.users()
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)

    users = real.api.users()
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] is True and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert account["field_member_number"] == f"M{cid}"
        assert links[cid]["uf_id"] == account["drupal_internal__uid"] == outcomes[cid]["uf_id"]
        assert links[cid]["uf_name"].lower() == EMAILS[cid]
        assert real.box.activities(cid)[0]["subject"] == f"Created : {username} ({account['drupal_internal__uid']})"
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (nothing sent: Drupal's default)
    assert {users[name]["preferred_langcode"] for cid, name in CREATED.items() if cid != 2} == {"en"}
    assert users["ada.lovelace"]["preferred_langcode"] == "fr"
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    # the existing account: linked (the contact's email differs only in case), and nothing about it changed
    assert links[6]["uf_id"] == real.existing["jane.doe"] == outcomes[6]["uf_id"]
    assert users["jane.doe"] == before["jane.doe"]  # every attribute: changed, roles, langcode, field, ...
    assert users["jane.doe"]["field_member_number"] is None
    assert users["john.smith"] == before["john.smith"] and users["larry"] == before["larry"]
    assert links[7]["uf_id"] == real.existing["larry"]
    # administrators are never linked: uid 1 (Adam's email) and the site_boss (Bea's)
    assert 14 not in links and 17 not in links
    assert str(real.existing["the.boss"]) in outcomes[17]["reason"]
    assert users["the.boss"] == before["the.boss"] and users["admin"] == before["admin"]

    # exactly one reset mail per new account, none for Grace (do_not_email), none for anyone else;
    # each carries a one-time login link for its own account
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
    by_address = {re.findall(r"[\w.+-]+@[\w.-]+", m["to"])[0].lower(): m for m in real.site.mails()}
    for cid, username in CREATED.items():
        if cid != 3:
            uid = users[username]["drupal_internal__uid"]
            assert re.search(rf"/user/reset/{uid}/\d+/\S+", by_address[EMAILS[cid]]["body"]), cid


def test_without_the_language_permission_no_language_is_sent_and_all_is_created(real_sandbox):
    """The API user may not read the languages (the default): Ada's fr_FR is not sent, nothing fails."""
    real = real_sandbox
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)
    users = real.api.users()
    assert {users[name]["preferred_langcode"] for name in CREATED.values()} == {"en"}
    assert {users[name]["field_member_number"] for name in CREATED.values()} == {f"M{cid}" for cid in CREATED}


def test_an_existing_email_with_on_existing_email_fail_is_not_linked(real_sandbox):
    real = real_sandbox
    real.box.configure(on_existing_email="fail")
    before = real.api.users()
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success")
    assert outcomes[6]["outcome"] == "failed" and "jane.doe" in outcomes[6]["reason"]
    assert 6 not in real.box.ufmatch()
    after = real.api.users()
    assert [u["name"] for u in after.values() if u["mail"].lower() == "jane.doe@example.org"] == ["jane.doe"]
    assert after["jane.doe"] == before["jane.doe"]
    assert "jane.doe@example.org" not in real.mails_by_address()


def test_an_email_taken_on_the_site_after_planning_is_refused_by_drupal_and_linked(real_sandbox, monkeypatch):
    """Somebody registers with Alan's email (in other case) between the plan and his create: the real
    Drupal refuses the create (422 on mail), the batch looks the email up and links that account."""
    from cms_operators.drupal.backend import DrupalBackend

    real = real_sandbox
    original = DrupalBackend.create_user
    raced: list[int] = []

    def create_user(self, **kwargs):
        if kwargs["email"].lower() == "alan@example.org" and not raced:
            raced.append(real.admin.create("alan.elsewhere", "Alan@Example.org"))
        return original(self, **kwargs)

    monkeypatch.setattr(DrupalBackend, "create_user", create_user)
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success") and raced
    assert (outcomes[4]["outcome"], outcomes[4]["username"], outcomes[4]["uf_id"]) == (
        "linked_existing", "alan.elsewhere", raced[0])
    assert real.box.ufmatch()[4]["uf_id"] == raced[0]
    users = real.api.users()
    assert "alan.turing" not in users
    assert [u["name"] for u in users.values() if u["mail"].lower() == "alan@example.org"] == ["alan.elsewhere"]
    assert users["alan.elsewhere"]["field_member_number"] is None  # not ours: nothing set on it
    assert "alan@example.org" not in real.mails_by_address()
    assert {cid for cid, row in outcomes.items() if row["outcome"] == "created"} == set(CREATED) - {4}


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Drupal makes the account, and the client's connection is dropped."""
    from provisioning import outcomes as outcomes_text

    real = real_sandbox
    proxy = real.through_proxy()
    proxy.inject(method="POST", path=USERS_PATH, body_contains="ada@example.org", lose_answer=True, times=1)

    run, outcomes = real.box.run()

    real.outcomes_ok(run, outcomes)
    assert proxy.pending_faults == 0
    creates = [(c.lost, c.target_status) for c in proxy.calls if c.method == "POST" and c.path == USERS_PATH]
    # pre-flight's probe (an empty name and mail: refused by design), then one post per account, Ada's
    # lost and never sent again
    assert creates[0] == (False, 422)
    assert sorted(creates[1:]) == [(False, 201)] * (len(CREATED) - 1) + [(True, 201)]
    # the doubt was settled by a look-up of Ada's email through the proxy, after the lost answer
    lost_at = next(i for i, c in enumerate(proxy.calls) if c.lost)
    assert any(c.method == "GET" and c.path == USERS_PATH and "ada@example.org" in unquote(c.query).lower()
               for c in proxy.calls[lost_at + 1:])
    assert outcomes[2]["reason"] == outcomes_text.found_after_doubt()
    # and the password mails went through the proxy too: one request per mailed account
    assert len([c for c in proxy.calls if c.method == "POST" and c.path == "/user/password"]) == len(CREATED) - 1
    users = real.api.users()
    (ada,) = [u for u in users.values() if u["mail"].lower() == "ada@example.org"]
    assert ada["name"] == "ada.lovelace" and ada["roles"] == ["member"] and ada["field_member_number"] == "M2"
    links = real.box.ufmatch()
    assert links[2]["uf_id"] == ada["drupal_internal__uid"] == outcomes[2]["uf_id"]
    for cid, username in CREATED.items():  # every account linked, one per email
        assert links[cid]["uf_id"] == users[username]["drupal_internal__uid"]
        assert len([u for u in users.values() if u["mail"].lower() == EMAILS[cid]]) == 1
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}


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
    assert not any(row["outcome"] == "created" for row in outcomes.values())

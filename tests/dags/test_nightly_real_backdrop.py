"""The nightly DAG end to end (dag.test) against a real Backdrop 1.28 reached through bee over a real
private sshd (sandbox/real_backdrop); CiviCRM is the emulator with the demo seed's contacts.

Accounts are really created, active, in the configured role (`member`), with the configured user
field (`field_member_number`) and the contact's language where the site has it (en, fr), linked, and
sent Backdrop's own "created by an administrator" mail (captured on the site itself). The site is
reset before each test; the demo seed's accounts (larry, jane.doe, john.smith) are then made on it
with Backdrop's own API, plus an `administrator` account whose email is a triggered contact's.
Contact ids are those of sandbox/demo_seed.yaml; the seed copy adds that contact (17) and gives Ada a
French and Alan a German preferred language. Larry's link is pointed at the uid his account got.
"""

from __future__ import annotations

import re
import secrets
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sandbox import local_airflow
from sandbox.backdrop.testing import clear_drop, drop_after_items
from sandbox.civicrm import CiviCRMEmulator
from sandbox.sites import DEMO_SEED
from tests.dags.conftest import BASE_SETTINGS, Sandbox

pytestmark = [pytest.mark.real_backdrop, pytest.mark.slow]

EXISTING = [
    {"name": "larry", "mail": "larry@example.org", "roles": ["member"]},
    {"name": "jane.doe", "mail": "jane.doe@example.org"},
    {"name": "john.smith", "mail": "jsmith@elsewhere.example"},
    {"name": "the.boss", "mail": "boss@example.org", "roles": ["administrator"]},
]
BOSS = {"id": 17, "first_name": "Bea", "last_name": "Boss", "email": "Boss@Example.org"}
CREATED = {2: "ada.lovelace", 3: "grace.hopper", 4: "alan.turing", 5: "zoe.angstrom", 11: "sam.family",
           16: "john.smith2"}
EMAILS = {2: "ada@example.org", 3: "grace@example.org", 4: "alan@example.org", 5: "zoe@example.org",
          6: "jane.doe@example.org", 11: "family@example.org", 16: "john.smith@example.org"}
FAILED = {8: "no primary email", 9: "invalid email", 10: "invalid email 'lena.", 12: "contact 11", 13: "deceased",
          14: "administrator", 17: "administrator"}  # 14: admin@example.test is uid 1; 17: an administrator
LANGUAGES = {2: "fr_FR", 4: "de_DE"}  # the site has en and fr
BASE_URL = "https://backdrop.example.test"


@dataclass
class RealBox:
    box: Sandbox
    site: object            # sandbox.real_backdrop.RealBackdrop
    existing: dict[str, int]
    monkeypatch: pytest.MonkeyPatch

    def connect(self, conn_type: str = "backdrop", **extra) -> None:
        env = local_airflow.connection_env(self.box.civicrm.url, self.box.secrets["api_key"],
                                           self.box.secrets["site_key"], "unused", "", "unused")
        self.monkeypatch.setenv("AIRFLOW_CONN_CIVICRM_DEFAULT", env["AIRFLOW_CONN_CIVICRM_DEFAULT"])
        self.monkeypatch.setenv("AIRFLOW_CONN_CMS_DEFAULT", self.site.connection(conn_type, **extra))

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
def real_sandbox(real_backdrop, airflow_db, monkeypatch, tmp_path):
    real_backdrop.reset()
    existing = real_backdrop.create_accounts(EXISTING)
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
        box.configure(**BASE_SETTINGS, cms_type="backdrop", user_fields={"field_member_number": "M{contact_id}"},
                      sync_preferred_language=True)
        real = RealBox(box, real_backdrop, existing, monkeypatch)
        real.connect()
        yield real
    clear_drop()
    real_backdrop.set_mail_works(True)
    real_backdrop.reset()


def test_accounts_created_in_the_role_with_field_language_linked_and_mailed(real_sandbox):
    real = real_sandbox
    before = real.site.users()
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)

    users = real.site.users()
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] == 1 and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert account["member_number"] == f"M{cid}"
        assert links[cid]["uf_id"] == account["uid"] == outcomes[cid]["uf_id"]
        assert real.box.activities(cid)[0]["subject"] == f"Created : {username} ({account['uid']})"
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (none stored: the site's default)
    assert users["ada.lovelace"]["language"] == "fr"
    assert {users[name]["language"] for cid, name in CREATED.items() if cid != 2} == {""}
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    # the existing account: linked (the contact's email differs only in case), and nothing about it changed
    assert links[6]["uf_id"] == real.existing["jane.doe"] == outcomes[6]["uf_id"]
    assert users["jane.doe"] == before["jane.doe"] and users["jane.doe"]["member_number"] is None
    assert users["john.smith"] == before["john.smith"] and users["larry"] == before["larry"]
    assert links[7]["uf_id"] == real.existing["larry"]
    # administrators are never linked: uid 1 (Adam's email) and the administrator (Bea's)
    assert 14 not in links and 17 not in links
    assert str(real.existing["the.boss"]) in outcomes[17]["reason"]
    assert users["the.boss"] == before["the.boss"] and users["admin"] == before["admin"]

    # exactly one mail per new account (none for Grace: do_not_email), Backdrop's own, with a one-time
    # login link for the account on the site's address
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
    by_address = {re.findall(r"[\w.+-]+@[\w.-]+", m["to"])[0].lower(): m for m in real.site.mails()}
    for cid, username in CREATED.items():
        if cid != 3:
            mail = by_address[EMAILS[cid]]
            assert mail["subject"] == "An administrator created an account for you at cmsuser real Backdrop"
            assert re.search(rf"{re.escape(BASE_URL)}/user/reset/{users[username]['uid']}/\d+/\S+", mail["body"])


def test_the_ssh_connection_dropped_mid_batch_creates_no_duplicate(real_sandbox):
    """The SSH transport is closed under the bulk create once Backdrop has answered two accounts; bee may
    finish one more. The batch looks the chunk up by email, links what exists, and the retry makes the
    rest: every contact gets exactly one account, one mail."""
    real = real_sandbox
    real.box.configure(batch_size=10)
    real.connect(timeout=5)  # the next try waits out the slowest answer (the call's timeout) before it looks
    sshd_log = Path(real.site.state["ssh"]["log"])
    logins_before = sshd_log.read_text().count("Accepted publickey")
    drop_after_items(2)
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)
    users = real.site.users()
    for cid, username in CREATED.items():
        assert len([u for u in users.values() if u["mail"].lower() == EMAILS[cid]]) == 1
        account = users[username]
        assert account["roles"] == ["member"] and account["member_number"] == f"M{cid}"
        assert real.box.ufmatch()[cid]["uf_id"] == account["uid"]
    assert real.mails_by_address() == {EMAILS[cid]: 1 for cid in CREATED if cid != 3}
    # the drop was real: the hook that lost its session opened a new one (one session per backend otherwise)
    from cms_operators.backdrop.hook import BeeHook

    assert BeeHook.on_item is None  # the armed drop fired
    logins = sshd_log.read_text().count("Accepted publickey") - logins_before
    assert logins >= 2 + 2  # preflight, extract, and the batch's session twice (before and after the drop)


def test_second_run_creates_nothing_new_over_an_airflow_ssh_connection(real_sandbox):
    """Airflow's own connection type ssh carries Backdrop when the settings say cms_type: backdrop."""
    real = real_sandbox
    real.connect("ssh")
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)
    before = real.site.users()
    mails = len(real.site.mails())
    run, outcomes = real.box.run()
    assert str(run.state).endswith("success")
    assert real.site.users() == before
    assert len(real.site.mails()) == mails
    assert {row["outcome"] for row in outcomes.values()} == {"failed"}
    assert not any(row["outcome"] == "created" for row in outcomes.values())

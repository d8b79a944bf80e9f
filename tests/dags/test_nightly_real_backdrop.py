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
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox.backdrop.testing import clear_drop, drop_after_items
from tests.dags import real_nightly
from tests.dags.real_nightly import CREATED, EMAILS, MAILED

pytestmark = [pytest.mark.real_backdrop, pytest.mark.slow]

EXISTING = real_nightly.accounts_with_boss("administrator")
BASE_URL = "https://backdrop.example.test"


@dataclass
class BackdropBox(real_nightly.RealBoxWithBoss):
    def uid(self, account: dict) -> int:
        return account["uid"]


@pytest.fixture
def real_sandbox(real_backdrop, airflow_db, monkeypatch, tmp_path):
    real_backdrop.reset()
    existing = real_backdrop.create_accounts(EXISTING)
    settings = {"cms_type": "backdrop", "user_fields": {"field_member_number": "M{contact_id}"},
                "sync_preferred_language": True}
    with real_nightly.real_box(BackdropBox, real_backdrop, real_nightly.seed_with_boss(existing["larry"]),
                               monkeypatch, tmp_path, settings, existing=existing) as real:
        real.connect(real_backdrop.connection())
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
    real.created_linked(users, outcomes)
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] == 1 and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert account["member_number"] == f"M{cid}"
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (none stored: the site's default)
    assert users["ada.lovelace"]["language"] == "fr"
    assert {users[name]["language"] for cid, name in CREATED.items() if cid != 2} == {""}
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    real.existing_left_alone(before, users, outcomes)
    assert users["jane.doe"]["member_number"] is None

    # exactly one mail per new account (none for Grace: do_not_email), Backdrop's own, with a one-time
    # login link for the account on the site's address
    assert real.mails_by_address() == MAILED
    by_address = real.mails_to()
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
    # the next try waits out the slowest answer (the call's timeout) before it looks
    real.connect(real.site.connection(timeout=5))
    sshd_log = Path(real.site.state["ssh"]["log"])
    logins_before = sshd_log.read_text().count("Accepted publickey")
    drop_after_items(2)
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)
    users = real.site.users()
    real.one_account_each(users)
    for cid, username in CREATED.items():
        account = users[username]
        assert account["roles"] == ["member"] and account["member_number"] == f"M{cid}"
    assert real.mails_by_address() == MAILED
    # the drop was real: the hook that lost its session opened a new one (one session per backend otherwise)
    from cms_operators.backdrop.hook import BeeHook

    assert BeeHook.on_item is None  # the armed drop fired
    logins = sshd_log.read_text().count("Accepted publickey") - logins_before
    assert logins >= 2 + 2  # preflight, extract, and the batch's session twice (before and after the drop)


def test_second_run_creates_nothing_new_over_an_airflow_ssh_connection(real_sandbox):
    """Airflow's own connection type ssh carries Backdrop when the settings say cms_type: backdrop."""
    real = real_sandbox
    real.connect(real.site.connection("ssh"))
    run, outcomes = real.box.run()
    real.outcomes_ok(run, outcomes)
    real.second_run_changes_nothing(real.site.users)

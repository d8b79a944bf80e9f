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
from dataclasses import dataclass
from urllib.parse import unquote

import pytest
import requests

from tests.dags import real_nightly
from tests.dags.real_nightly import CREATED, EMAILS, MAILED

pytestmark = [pytest.mark.real_drupal, pytest.mark.slow]

JSONAPI = "application/vnd.api+json"
USERS_PATH = "/jsonapi/user/user"
#: The API user's default permissions, and the optional one that lets it read the site's languages.
DEFAULT_PERMISSIONS = ["administer users", "administer permissions"]
WITH_LANGUAGES = [*DEFAULT_PERMISSIONS, "administer languages"]

EXISTING = real_nightly.accounts_with_boss("site_boss")  # the demo seed's drupal section, and the.boss


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
class DrupalBox(real_nightly.RealBoxWithBoss):
    api: Api                # with the API user's login (what the pipeline uses)
    admin: Api              # with uid 1's login (seeding only)

    def uid(self, account: dict) -> int:
        return account["drupal_internal__uid"]

    def connection(self, host: str) -> str:
        return real_nightly.cms_connection(host, self.site.api_login, self.site.api_password, "drupal")


@pytest.fixture
def real_sandbox(real_drupal, airflow_db, monkeypatch, tmp_path):
    real_drupal.reset()
    admin = Api(real_drupal, real_drupal.admin_auth)
    existing = {account["name"]: admin.create(**account) for account in EXISTING}
    settings = {"user_fields": {"field_member_number": "M{contact_id}"}, "sync_preferred_language": True}
    with real_nightly.real_box(DrupalBox, real_drupal, real_nightly.seed_with_boss(existing["larry"]),
                               monkeypatch, tmp_path, settings, existing=existing,
                               api=Api(real_drupal, real_drupal.api_auth), admin=admin) as real:
        real.connect(real.connection(real_drupal.base_url))
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
    real.created_linked(users, outcomes)
    links = real.box.ufmatch()
    for cid, username in CREATED.items():
        account = users[username]
        assert account["status"] is True and account["roles"] == ["member"]
        assert account["mail"] == EMAILS[cid]
        assert account["field_member_number"] == f"M{cid}"
        assert links[cid]["uf_name"].lower() == EMAILS[cid]
    # Ada prefers fr_FR: the site has fr; Alan's de_DE it has not (nothing sent: Drupal's default)
    assert {users[name]["preferred_langcode"] for cid, name in CREATED.items() if cid != 2} == {"en"}
    assert users["ada.lovelace"]["preferred_langcode"] == "fr"
    assert set(users) == set(before) | set(CREATED.values())  # nothing else was made

    # every attribute of the existing accounts: changed, roles, langcode, field, ...
    real.existing_left_alone(before, users, outcomes)
    assert users["jane.doe"]["field_member_number"] is None

    # exactly one reset mail per new account, none for Grace (do_not_email), none for anyone else;
    # each carries a one-time login link for its own account
    assert real.mails_by_address() == MAILED
    by_address = real.mails_to()
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
    assert [u["name"] for u in real.with_email(after, "jane.doe@example.org")] == ["jane.doe"]
    assert after["jane.doe"] == before["jane.doe"]
    assert "jane.doe@example.org" not in real.mails_by_address()


def test_an_email_taken_on_the_site_after_planning_is_refused_by_drupal_and_linked(real_sandbox):
    """Somebody registers with Alan's email (in other case) between the plan and his create: the real
    Drupal refuses the create (422 on mail), the batch looks the email up and links that account."""
    from cms_operators.drupal.backend import DrupalBackend

    real = real_sandbox
    real.email_taken_after_planning(DrupalBackend, lambda: real.admin.create("alan.elsewhere", "Alan@Example.org"))
    users = real.api.users()
    assert "alan.turing" not in users
    assert [u["name"] for u in real.with_email(users, "alan@example.org")] == ["alan.elsewhere"]
    assert users["alan.elsewhere"]["field_member_number"] is None  # not ours: nothing set on it


def test_a_lost_create_answer_converges_without_a_duplicate(real_sandbox):
    """The proxy forwards Ada's create, Drupal makes the account, and the client's connection is dropped."""
    from provisioning import outcomes as outcomes_text

    real = real_sandbox
    proxy, outcomes = real.lose_a_create_answer(USERS_PATH, probe_status=422, created_status=201)
    # the doubt was settled by a look-up of Ada's email through the proxy, after the lost answer
    lost_at = next(i for i, c in enumerate(proxy.calls) if c.lost)
    assert any(c.method == "GET" and c.path == USERS_PATH and "ada@example.org" in unquote(c.query).lower()
               for c in proxy.calls[lost_at + 1:])
    assert outcomes[2]["reason"] == outcomes_text.found_after_doubt()
    # and the password mails went through the proxy too: one request per mailed account
    assert len([c for c in proxy.calls if c.method == "POST" and c.path == "/user/password"]) == len(CREATED) - 1
    users = real.api.users()
    (ada,) = real.with_email(users, "ada@example.org")
    assert ada["name"] == "ada.lovelace" and ada["roles"] == ["member"] and ada["field_member_number"] == "M2"
    assert real.box.ufmatch()[2]["uf_id"] == ada["drupal_internal__uid"] == outcomes[2]["uf_id"]
    real.one_account_each(users)
    assert real.mails_by_address() == MAILED


def test_second_run_creates_nothing_new(real_sandbox):
    real = real_sandbox
    real.box.run()
    real.second_run_changes_nothing(real.api.users)

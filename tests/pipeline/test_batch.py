"""create_batch against an in-memory CMS and UFMatch table: idempotent creates, retries, doubts, mails.

The fakes record every call, so the tests can say not only what came out but what was sent (and what
was not sent twice). Rows come from the real planner, as the create task gets them.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import pytest

from cms_operators.backend import (
    CmsAuthError,
    CmsConfigError,
    CmsDuplicateEmail,
    CmsDuplicateLogin,
    CmsError,
    CmsMailFailed,
    CmsRejected,
    CmsUnavailable,
    CmsUser,
)
from cms_operators.wordpress.rules import RULES
from pipeline import batch as batch_module
from pipeline.batch import (
    MAIL_CHUNK,
    MAIL_CHUNK_SECONDS,
    MAX_MAIL_CHUNK,
    USERNAME_TRIES,
    BatchContext,
    BatchIncomplete,
    create_batch,
    next_mail_chunk,
    wave_interval,
)
from provisioning import journal, outcomes
from provisioning.journal import JournalEntry
from provisioning.plan import cms_users_frame, contacts_frame, links_frame, make_batches, plan_contacts
from provisioning.settings import Settings

LOST = "lost"          # scripted answer: the account is made, but the answer never arrives
LOST_500 = "lost_500"  # the account is made, then the CMS answers an opaque 500


# ----------------------------------------------------------------------------------------- fakes


class FakeCms:
    """A CMS with a user table: logins and emails unique (case-insensitively), ids from 100 up.

    `script(email, *answers)` queues answers for that email's next create_user calls: an exception
    to raise without creating, LOST / LOST_500 to create and then fail; unscripted calls behave.
    """

    name = "fake"
    rules = RULES  # WordPress's: logins of 60 characters, emails of 100

    def client_timeout(self) -> float:
        return 30.0

    def __init__(self):
        self.users: dict[str, CmsUser] = {}  # email (lower-case) -> account
        self.answers: dict[str, list] = {}
        self.lookup_errors: dict[str, list[CmsError]] = {}
        self.mail_errors: dict[int, BaseException] = {}
        self.calls: list[tuple] = []
        self.created_with: list[dict] = []
        self.mailed: list[int] = []
        self._next_id = 100

    def add_user(self, username: str, email: str, roles: tuple[str, ...] = ("subscriber",),
                 registered: str | None = None) -> CmsUser:
        user = CmsUser(uf_id=self._next_id, username=username, email=email, roles=roles,
                       registered=registered or journal.now_utc())
        self._next_id += 1
        self.users[email.lower()] = user
        return user

    def script(self, email: str, *answers) -> None:
        self.answers.setdefault(email.lower(), []).extend(answers)

    def count(self, method: str, email: str | None = None) -> int:
        return sum(1 for call in self.calls if call[0] == method and email in (None, call[-1]))

    def creates(self, email: str) -> list[str]:
        """Usernames tried for an email, in order."""
        return [call[1] for call in self.calls if call[0] == "create_user" and call[2] == email]

    # --- the CmsBackend methods create_batch uses

    @staticmethod
    def is_admin(user: CmsUser) -> bool:
        return "administrator" in user.roles

    def find_by_email(self, email: str) -> CmsUser | None:
        self.calls.append(("find_by_email", email))
        errors = self.lookup_errors.get(email.lower())
        if errors:
            raise errors.pop(0)
        return self.users.get(email.lower())

    def create_user(self, *, username, email, first_name, last_name, display_name, roles, locale=None,
                    fields=None):
        self.calls.append(("create_user", username, email))
        self.created_with.append({"username": username, "email": email, "first_name": first_name,
                                  "last_name": last_name, "display_name": display_name, "roles": roles,
                                  "locale": locale, "fields": fields})
        queued = self.answers.get(email.lower())
        answer = queued.pop(0) if queued else None
        if isinstance(answer, CmsError):
            raise answer
        if any(u.username.lower() == username.lower() for u in self.users.values()):
            raise CmsDuplicateLogin(500, "existing_user_login", "Sorry, that username already exists!")
        if email.lower() in self.users:
            raise CmsDuplicateEmail(500, "existing_user_email", "Sorry, that email address is already used!")
        user = self.add_user(username, email)
        if answer == LOST:
            raise CmsUnavailable(None, None, "the connection to the CMS dropped before it answered")
        if answer == LOST_500:
            raise CmsRejected(500, "internal_server_error", "There has been a critical error on this website.")
        return user

    def send_password_mail(self, user: CmsUser) -> None:
        self.calls.append(("send_password_mail", user.uf_id))
        error = self.mail_errors.get(user.uf_id)
        if error is not None:
            raise error
        self.mailed.append(user.uf_id)


class FakeUFMatch:
    """CiviCRM's UFMatch table for one domain: what linked_accounts reads and save_links writes."""

    def __init__(self):
        self.rows: dict[int, dict] = {}
        self.saves: list[list[dict]] = []
        self.refuse: dict[int, str] = {}  # contact id -> the error CiviCRM gives for its link

    def link(self, contact_id: int, uf_id: int, uf_name: str) -> None:
        self.rows[contact_id] = {"contact_id": contact_id, "uf_id": uf_id, "uf_name": uf_name}

    def linked_accounts(self, contact_ids: list[int]) -> dict[int, dict]:
        return {cid: dict(self.rows[cid]) for cid in contact_ids if cid in self.rows}

    def links_for(self, uf_ids: list[int]) -> list[dict]:
        return [dict(row) for row in self.rows.values() if row["uf_id"] in uf_ids]

    def save_links(self, links: list[dict]) -> dict[int, str]:
        self.saves.append(copy.deepcopy(links))
        errors = {}
        for link in links:
            if link["contact_id"] in self.refuse:
                errors[link["contact_id"]] = self.refuse[link["contact_id"]]
            else:
                self.rows[link["contact_id"]] = dict(link)
        return errors


MARKER = "[Airflow run cmsuser_nightly / this_run]"


class FakeJournal:
    """The contacts' "User Account Creation" activities as far as the journal goes (CiviCRM in production)."""

    def __init__(self):
        self.activities: dict[int, JournalEntry] = {}
        self.subjects: dict[int, str] = {}
        self.writes: list[list[JournalEntry]] = []
        self._next_id = 900

    def add(self, entry: JournalEntry) -> JournalEntry:
        """An entry an earlier try or run left behind."""
        entry = dataclasses.replace(entry, activity_id=self._next_id, status=entry.status or "Scheduled",
                                    markers=entry.markers or ("[Airflow run cmsuser_nightly / earlier]",))
        self._next_id += 1
        self.activities[entry.activity_id] = entry
        return entry

    def pending(self, contact_id: int, username: str, **fields) -> JournalEntry:
        """A create was sent and never answered (the try died, or the answer was lost)."""
        return self.add(JournalEntry(contact_id=contact_id, usernames=(username,), sent=journal.now_utc(),
                                     markers=(MARKER,), **fields))

    def read(self, contact_ids: list[int]) -> dict[int, list[JournalEntry]]:
        found: dict[int, list[JournalEntry]] = {}
        for entry in self.activities.values():
            if entry.contact_id in contact_ids:
                found.setdefault(entry.contact_id, []).append(entry)
        return found

    def write(self, entries: list[JournalEntry], subjects: dict[int, str]) -> dict[int, JournalEntry]:
        self.writes.append(list(entries))
        written = {}
        for entry in entries:
            if entry.activity_id is None:
                entry = dataclasses.replace(entry, activity_id=self._next_id, status="Scheduled")
                self._next_id += 1
                self.subjects[entry.activity_id] = subjects.get(entry.contact_id)
            entry = dataclasses.replace(entry, markers=tuple(dict.fromkeys([*entry.markers, MARKER])))
            self.activities[entry.activity_id] = entry
            written[entry.contact_id] = entry
        return written

    def of(self, contact_id: int) -> list[JournalEntry]:
        return [e for e in self.activities.values() if e.contact_id == contact_id]

    def mail_writes(self) -> list[list[tuple[int, str]]]:
        """The writes that carried mail states: (uf_id, state) per entry."""
        return [[(e.uf_id, e.mail) for e in write] for write in self.writes if all(e.mail for e in write)]


class Stopped(BaseException):
    """The worker died mid-task (not an error the batch could catch)."""


class World:
    def __init__(self):
        self.cms = FakeCms()
        self.civicrm = FakeUFMatch()
        self.journal = FakeJournal()
        self.timed_out: str | None = None
        self.sleeps: list[float] = []

    def run(self, rows: list[dict], *, final_try: bool = False, notify: bool = True,
            on_existing_email: str = "link", client_timeout: float = 30.0, retry_delay: float = 0.0,
            **more) -> list[dict]:
        ctx = BatchContext(backend=self.cms, linked_accounts=self.civicrm.linked_accounts,
                           save_links=self.civicrm.save_links, read_journal=self.journal.read,
                           write_journal=self.journal.write, links_for=self.civicrm.links_for, marker=MARKER,
                           notify=notify, on_existing_email=on_existing_email, final_try=final_try,
                           client_timeout=client_timeout, retry_delay=retry_delay,
                           load_timed_out=lambda: self.timed_out, store_timed_out=self._store_timed_out,
                           sleep=self.sleeps.append, **more)
        return create_batch(copy.deepcopy(rows), ctx)

    def _store_timed_out(self, when: str) -> None:
        self.timed_out = when

    def saved_contacts(self) -> list[int]:
        return [link["contact_id"] for save in self.civicrm.saves for link in save]


@pytest.fixture
def world() -> World:
    return World()


# ------------------------------------------------------------------------------------- the rows


def person(contact_id: int, first: str, last: str, **fields) -> dict:
    row = {"contact_id": contact_id, "contact_type": "Individual", "first_name": first, "last_name": last,
           "display_name": f"{first} {last}", "email": f"{first.lower()}@example.org", "is_deceased": False,
           "do_not_email": False, "preferred_language": "en_US", "uf_id": None, "uf_name": None,
           "sources": ["group:5"], "attempts": 0}
    row.update(fields)
    return row


ADA = person(1, "Ada", "Lovelace")
GRACE = person(2, "Grace", "Hopper")
ALAN = person(3, "Alan", "Turing")


def batch_of(*contacts: dict, users: tuple = ()) -> list[dict]:
    """The one batch the planner makes of these contacts; users are existing CMS accounts (uf_id, login, email)."""
    cms_users = cms_users_frame([{"uf_id": u[0], "username": u[1], "email": u[2], "roles": ["subscriber"]}
                                 for u in users])
    plan = plan_contacts(contacts_frame(list(contacts)), cms_users, links_frame(),
                         Settings(trigger_groups=["new_members"], roles=["subscriber", "member"]), RULES)
    batches = make_batches(plan, 1000)
    return batches[0] if batches else []


def by_id(results: list[dict]) -> dict[int, dict]:
    return {r["contact_id"]: r for r in results}


# ---------------------------------------------------------------------------------- plain creates


def test_plain_creates_give_one_result_per_row_in_order_and_write_links_in_one_call(world):
    rows = batch_of(ALAN, ADA, GRACE)
    results = world.run(rows)

    assert [r["contact_id"] for r in results] == [1, 2, 3]
    for result, row in zip(results, rows, strict=True):
        user = world.cms.users[row["email"]]
        assert result["outcome"] == "created"
        assert result["reason"] == outcomes.reason_created()
        assert (result["uf_id"], result["username"]) == (user.uf_id, row["username"])
    assert world.civicrm.saves == [[{"contact_id": r["contact_id"], "uf_id": world.cms.users[r["email"]].uf_id,
                                     "uf_name": r["email"]} for r in rows]]
    assert world.cms.count("create_user") == 3
    assert world.cms.count("find_by_email") == 0  # a first try has nothing to look up


def test_create_sends_the_planned_fields(world):
    world.run(batch_of(person(1, "Zoë", "Ångström", email="zoe@example.org", preferred_language="de_DE")))
    assert world.cms.created_with == [{"username": "zoe.angstrom", "email": "zoe@example.org", "first_name": "Zoë",
                                       "last_name": "Ångström", "display_name": "Zoë Ångström",
                                       "roles": ["subscriber", "member"], "locale": "de_DE", "fields": None}]


def test_create_sends_rendered_user_fields_and_no_locale_when_language_sync_is_off(world):
    contacts = [person(1, "Zoë", "Ångström", email="zoe@example.org", preferred_language="de_DE")]
    settings = Settings(trigger_groups=["g"], roles=["member"], sync_preferred_language=False,
                        user_fields={"field_full_name": "{first_name} {last_name}", "field_id": "c{contact_id}"})
    plan = plan_contacts(contacts_frame(contacts), cms_users_frame([]), links_frame(), settings, RULES)
    world.run(make_batches(plan, 10)[0])
    (sent,) = world.cms.created_with
    assert (sent["locale"], sent["fields"]) == (None, {"field_full_name": "Zoë Ångström", "field_id": "c1"})


def test_link_rows_need_no_cms_call(world):
    existing = world.cms.add_user("grace_h", "grace@example.org")
    rows = batch_of(GRACE, users=[(existing.uf_id, "grace_h", "grace@example.org")])
    assert rows[0]["action"] == "link"
    world.cms.calls.clear()

    [result] = world.run(rows)

    assert result["outcome"] == "linked_existing"
    assert result["reason"] == outcomes.reason_linked_existing()
    assert (result["uf_id"], result["username"]) == (existing.uf_id, "grace_h")
    assert world.cms.calls == []
    assert world.civicrm.rows[2]["uf_id"] == existing.uf_id


def test_empty_batch_makes_no_call(world):
    assert world.run([]) == []
    assert world.cms.calls == [] and world.civicrm.saves == [] and world.journal.writes == []


def test_every_create_is_journalled_in_one_write_before_anything_is_sent(world):
    rows = batch_of(ADA, GRACE)
    world.cms.mail_errors[100] = Stopped()  # stop after the creates, to see the journal as they left it
    write, calls_at_write = world.journal.write, []

    def watched(entries, subjects):
        calls_at_write.append(len(world.cms.calls))
        return write(entries, subjects)

    world.journal.write = watched
    with pytest.raises(Stopped):
        world.run(rows)

    first = world.journal.writes[0]
    assert calls_at_write[0] == 0  # nothing was posted before the journal was written
    assert [(e.contact_id, e.usernames, e.uf_id) for e in first] == [(1, ("ada.lovelace",), None),
                                                                    (2, ("grace.hopper",), None)]
    assert sorted(world.journal.subjects.values()) == ["Creating account ada.lovelace",
                                                       "Creating account grace.hopper"]
    # after the creates: the accounts' ids in one more write (no look-up needed for them again)
    second = world.journal.writes[1]
    assert [(e.contact_id, e.uf_id, e.username) for e in second] == [(1, 100, "ada.lovelace"),
                                                                     (2, 101, "grace.hopper")]


# ---------------------------------------------------------------------------------- retried tries


def test_contacts_linked_by_an_earlier_try_are_not_sent_again_and_keep_their_planned_outcome(world):
    existing = world.cms.add_user("grace_h", "grace@example.org")
    rows = batch_of(ADA, GRACE, users=[(existing.uf_id, "grace_h", "grace@example.org")])
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace",), uf_id=500, username="ada.lovelace"))
    world.civicrm.link(1, 500, "ada@example.org")
    world.civicrm.link(2, existing.uf_id, "grace@example.org")
    world.cms.calls.clear()

    results = by_id(world.run(rows, notify=False))

    assert results[1]["outcome"] == "created" and results[1]["uf_id"] == 500
    assert results[2]["outcome"] == "linked_existing" and results[2]["uf_id"] == existing.uf_id
    assert {r["reason"] for r in results.values()} == {outcomes.linked_by_earlier_try()}
    assert world.cms.calls == []  # the journal knows the account: nothing is read, created or linked again
    assert world.civicrm.saves == []


def test_an_account_made_earlier_reports_its_real_login(world):
    """An earlier try met a login taken since planning, created `ada.lovelace2`, then stopped."""
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace2",), uf_id=500,
                                   username="ada.lovelace2"))
    world.civicrm.link(1, 500, "ada@example.org")

    results = by_id(world.run(batch_of(ADA), notify=False))

    assert (results[1]["username"], results[1]["uf_id"]) == ("ada.lovelace2", 500)
    assert world.cms.creates("ada@example.org") == []


def test_a_create_the_journal_shows_unanswered_is_looked_up_first_and_linked_as_ours(world):
    rows = batch_of(ADA, GRACE)
    world.journal.pending(1, "ada.lovelace")  # try 1 sent it and died before its link was written
    made_by_first_try = world.cms.add_user("ada.lovelace", "ada@example.org")

    results = by_id(world.run(rows))

    assert results[1]["outcome"] == "created" and results[1]["uf_id"] == made_by_first_try.uf_id
    assert results[1]["reason"] == outcomes.found_after_retry()
    assert world.cms.creates("ada@example.org") == []  # never a second account
    assert world.cms.count("find_by_email", "grace@example.org") == 0  # nothing sent for Grace: no look-up
    assert world.cms.creates("grace@example.org") == ["grace.hopper"]
    assert world.civicrm.rows[1]["uf_id"] == made_by_first_try.uf_id
    assert world.cms.mailed == [made_by_first_try.uf_id, results[2]["uf_id"]]  # its mail, once


def test_an_account_found_by_email_that_the_journal_does_not_name_is_somebodys_existing_one(world):
    rows = batch_of(ADA)
    world.journal.pending(1, "ada.lovelace")
    theirs = world.cms.add_user("ada_l", "ada@example.org")  # made by someone else; our create never ran

    [result] = world.run(rows)

    assert result["outcome"] == "linked_existing" and result["uf_id"] == theirs.uf_id
    assert world.cms.mailed == []  # not ours: no password mail
    assert world.cms.creates("ada@example.org") == []


def test_a_look_up_never_links_an_administrator(world):
    rows = batch_of(ADA)
    world.journal.pending(1, "ada.lovelace")
    admin = world.cms.add_user("ada.lovelace", "ada@example.org", roles=("administrator",))

    [result] = world.run(rows)

    assert result["outcome"] == "failed"
    assert result["reason"] == outcomes.account_is_administrator("ada.lovelace", admin.uf_id)
    assert world.civicrm.saves == [] and world.cms.mailed == []


def test_a_look_up_never_links_an_account_linked_to_another_contact(world):
    rows = batch_of(ADA)
    since_planning = world.cms.add_user("ada", "ADA@example.org")
    world.civicrm.link(9, since_planning.uf_id, "ada.other@example.org")

    [result] = world.run(rows)

    assert result["outcome"] == "failed"
    assert result["reason"] == outcomes.account_linked_to_other("ada", since_planning.uf_id, 9)
    assert 1 not in world.civicrm.rows and world.cms.mailed == []


def test_a_timed_out_create_is_not_posted_again_and_the_next_try_waits_before_looking(world):
    rows = batch_of(ADA, GRACE)
    world.cms.script("ada@example.org", CmsUnavailable(None, "timeout", "WordPress did not answer within 30 s"))

    with pytest.raises(BatchIncomplete):
        world.run(rows, client_timeout=30.0, retry_delay=10.0)
    assert world.cms.creates("ada@example.org") == ["ada.lovelace"]  # once in this try, never again
    assert world.timed_out is not None
    # the CMS stores the account after our client gave up
    slow = world.cms.add_user("ada.lovelace", "ada@example.org")

    results = by_id(world.run(rows, client_timeout=30.0, retry_delay=10.0))

    # the first try kept Ada's email locked for the client timeout (test_batch_locks.py); the next waited the
    # larger of timeout and retry delay since the timeout
    assert len(world.sleeps) == 2 and world.sleeps[0] == 30.0 and 29 < world.sleeps[1] <= 30
    assert results[1]["outcome"] == "created" and results[1]["uf_id"] == slow.uf_id
    assert world.cms.creates("ada@example.org") == ["ada.lovelace"]


def test_a_try_that_died_with_creates_in_flight_makes_the_next_wait_out_the_client_timeout(world):
    rows = batch_of(ADA)
    world.journal.pending(1, "ada.lovelace")  # this run's earlier try was killed mid-batch

    world.run(rows, client_timeout=30.0, retry_delay=10.0)

    assert world.sleeps == [20.0]  # Airflow already waited the 10 s retry delay
    world.sleeps.clear()
    world.journal.activities.clear()
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace",), sent="2026-01-01T02:00:00Z"))
    world.civicrm.rows.clear()
    world.run(rows)  # an earlier run's entry: its requests ended long ago, no wait
    assert world.sleeps == []


def test_a_429_pauses_the_batch_for_its_retry_after_within_a_bound(world):
    rows = batch_of(ADA, GRACE, ALAN)
    world.cms.script("ada@example.org", CmsUnavailable(429, "too_many", "slow down", retry_after=7))
    world.cms.script("grace@example.org", CmsUnavailable(429, "too_many", "slow down", retry_after=9999))

    with pytest.raises(BatchIncomplete, match="2 of 3"):
        world.run(rows)

    assert world.sleeps == [7, 120.0]
    assert world.cms.count("find_by_email") == 0  # refused before it was processed: nothing to look for
    assert world.cms.creates("alan@example.org") == ["alan.turing"]


# ---------------------------------------------------------------------------------- name clashes


def test_a_login_taken_since_planning_gets_the_next_suffix(world):
    rows = batch_of(ADA)
    world.cms.add_user("ada.lovelace", "someone@example.org")
    world.cms.add_user("Ada.Lovelace2", "someone.else@example.org")

    [result] = world.run(rows)

    assert world.cms.creates("ada@example.org") == ["ada.lovelace", "ada.lovelace2", "ada.lovelace3"]
    assert result["outcome"] == "created" and result["username"] == "ada.lovelace3"
    assert result["uf_id"] == world.cms.users["ada@example.org"].uf_id


def test_login_clashes_are_bounded_then_the_contact_fails(world):
    rows = batch_of(ADA, GRACE)
    world.cms.script("ada@example.org", *[CmsDuplicateLogin(500, "existing_user_login", "taken")] * 10)

    results = by_id(world.run(rows))

    assert len(world.cms.creates("ada@example.org")) == USERNAME_TRIES
    assert results[1]["outcome"] == "failed"
    assert results[1]["reason"] == outcomes.username_taken("ada.lovelace", USERNAME_TRIES)
    assert results[1]["uf_id"] is None
    assert results[2]["outcome"] == "created"  # the rest of the batch is unaffected
    assert world.saved_contacts() == [2]


# ---------------------------------------------------------------------------------- doubts


def test_duplicate_email_is_looked_up_and_linked_as_the_existing_account_it_is(world):
    rows = batch_of(ADA)
    since_planning = world.cms.add_user("ada", "ADA@example.org")

    [result] = world.run(rows)

    assert result["outcome"] == "linked_existing" and result["uf_id"] == since_planning.uf_id
    assert result["reason"] == outcomes.EXISTING_ACCOUNT_SAME_EMAIL
    assert result["username"] == "ada"  # the account's real login, not the planned one
    assert len(world.cms.creates("ada@example.org")) == 1
    assert world.civicrm.rows[1]["uf_id"] == since_planning.uf_id
    assert world.cms.mailed == []


def test_duplicate_email_with_on_existing_email_fail_fails_the_contact(world):
    since_planning = world.cms.add_user("ada", "ada@example.org")

    [result] = world.run(batch_of(ADA), on_existing_email="fail")

    assert result["outcome"] == "failed"
    assert result["reason"] == outcomes.existing_email_not_linked("ada", since_planning.uf_id)
    assert world.civicrm.saves == []


def test_duplicate_email_that_cannot_be_found_fails_the_contact(world):
    rows = batch_of(ADA)
    world.cms.script("ada@example.org", CmsDuplicateEmail(500, "existing_user_email", "email in use"))

    [result] = world.run(rows)

    assert result["outcome"] == "failed"
    assert result["reason"] == outcomes.cms_rejected(outcomes.duplicate_email_not_found())
    assert world.cms.count("find_by_email", "ada@example.org") == 1
    assert world.civicrm.saves == [] and world.cms.mailed == []


def test_lost_answer_account_found_by_email_is_created_once(world):
    rows = batch_of(ADA)
    world.cms.script("ada@example.org", LOST)

    [result] = world.run(rows)

    assert result["outcome"] == "created" and result["reason"] == outcomes.found_after_doubt()
    assert result["uf_id"] == world.cms.users["ada@example.org"].uf_id
    assert len(world.cms.creates("ada@example.org")) == 1
    assert len(world.cms.users) == 1
    assert world.cms.mailed == [result["uf_id"]]


def test_unexplained_500_looks_up_then_tries_once_more(world):
    rows = batch_of(ADA)
    world.cms.script("ada@example.org", CmsRejected(500, "internal_server_error", "critical error"))

    [result] = world.run(rows)

    assert [c[0] for c in world.cms.calls[:3]] == ["create_user", "find_by_email", "create_user"]
    assert result["outcome"] == "created" and result["reason"] == outcomes.reason_created()


def test_unexplained_500_after_the_account_was_made_links_it(world):
    rows = batch_of(ADA)
    world.cms.script("ada@example.org", LOST_500)

    [result] = world.run(rows)

    assert len(world.cms.creates("ada@example.org")) == 1
    assert result["outcome"] == "created" and result["reason"] == outcomes.found_after_doubt()


def test_a_second_unexplained_500_fails_the_contact(world):
    rows = batch_of(ADA)
    world.cms.script("ada@example.org", *[CmsRejected(500, "internal_server_error", "critical error")] * 3)

    [result] = world.run(rows)

    assert len(world.cms.creates("ada@example.org")) == 2  # one more create at most
    assert world.cms.count("find_by_email") == 1
    assert result["outcome"] == "failed" and result["reason"] == outcomes.cms_rejected("critical error")


def test_validation_error_fails_the_contact_with_the_cms_message(world):
    rows = batch_of(ADA, GRACE)
    message = "Invalid parameter(s): email (email is not a valid email address)"
    world.cms.script("ada@example.org", CmsRejected(400, "rest_invalid_param", message))

    results = by_id(world.run(rows))

    assert results[1]["outcome"] == "failed" and results[1]["reason"] == outcomes.cms_rejected(message)
    assert message in results[1]["reason"]
    assert len(world.cms.creates("ada@example.org")) == 1 and world.cms.count("find_by_email") == 0
    assert results[2]["outcome"] == "created"


# ---------------------------------------------------------------------------------- run-level errors


@pytest.mark.parametrize("error", [
    CmsAuthError(401, "rest_cannot_create_user", "Sorry, you are not allowed to create new users."),
    CmsConfigError(404, "rest_no_route", "No route was found matching the URL and request method."),
], ids=["auth", "config"])
def test_run_level_errors_raise_after_linking_the_contacts_done_before(world, error):
    rows = batch_of(ADA, GRACE, ALAN)
    world.cms.script("grace@example.org", error)

    with pytest.raises(type(error)) as raised:
        world.run(rows)

    assert raised.value is error
    assert world.civicrm.saves == [[{"contact_id": 1, "uf_id": world.cms.users["ada@example.org"].uf_id,
                                     "uf_name": "ada@example.org"}]]
    assert world.cms.creates("alan@example.org") == []  # the batch stops at once


# ---------------------------------------------------------------------------------- transient errors


def test_transient_error_on_a_non_final_try_raises_after_the_others_are_linked_and_mailed(world):
    rows = batch_of(ADA, GRACE, ALAN)
    world.cms.script("grace@example.org", CmsUnavailable(503, None, "HTTP 503 Service Unavailable"))

    with pytest.raises(BatchIncomplete, match="1 of 3") as raised:
        world.run(rows)

    assert "HTTP 503" in str(raised.value)
    assert world.saved_contacts() == [1, 3]
    assert len(world.civicrm.saves) == 1
    assert sorted(world.cms.mailed) == sorted(world.cms.users[e].uf_id for e in ("ada@example.org",
                                                                                   "alan@example.org"))
    assert world.cms.count("find_by_email", "grace@example.org") == 1  # looked before giving up the try


def test_transient_error_on_the_final_try_fails_the_contact_when_the_cms_answered_others(world):
    rows = batch_of(ADA, GRACE)
    world.cms.script("grace@example.org", CmsUnavailable(None, None, "timed out after 30 s"))

    results = by_id(world.run(rows, final_try=True))

    assert results[2]["outcome"] == "failed"
    assert results[2]["reason"] == outcomes.cms_error_after_retries("timed out after 30 s")
    assert results[1]["outcome"] == "created"


def test_transient_lookup_error_on_a_retried_try_counts_as_transient(world):
    rows = batch_of(ADA, GRACE)
    world.journal.pending(2, "grace.hopper")
    world.cms.lookup_errors["grace@example.org"] = [CmsUnavailable(502, None, "HTTP 502 Bad Gateway")]

    with pytest.raises(BatchIncomplete):
        world.run(rows)

    assert world.cms.creates("grace@example.org") == []  # never created blind after a failed look
    assert world.saved_contacts() == [1]


def test_on_the_final_try_nothing_through_means_the_cms_is_down(world):
    rows = batch_of(ADA, GRACE)
    for email in ("ada@example.org", "grace@example.org"):
        world.cms.script(email, CmsUnavailable(None, None, "connection refused"))

    with pytest.raises(BatchIncomplete, match="2 of 2"):
        world.run(rows, final_try=True)

    assert world.civicrm.saves == []


# ---------------------------------------------------------------------------------- link write errors


def test_a_refused_link_fails_that_contact_and_sends_it_no_mail(world):
    rows = batch_of(ADA, GRACE)
    world.civicrm.refuse[2] = "CiviCRM refused the UFMatch link: DB Error: already exists"

    results = by_id(world.run(rows))

    assert results[2]["outcome"] == "failed"
    assert results[2]["reason"] == outcomes.link_failed("grace.hopper", world.civicrm.refuse[2])
    assert results[2]["mail"] is None
    assert results[1]["outcome"] == "created"
    assert world.cms.mailed == [results[1]["uf_id"]]


# ---------------------------------------------------------------------------------- mails


def test_one_mail_per_created_account_and_none_for_links_or_do_not_email(world):
    existing = world.cms.add_user("alan_t", "alan@example.org")
    quiet = person(4, "Quiet", "Person", do_not_email=True)
    already = person(5, "Linked", "Before", uf_id=77, uf_name="linked@example.org")  # plan: already linked
    rows = batch_of(ADA, quiet, ALAN, already, users=[(existing.uf_id, "alan_t", "alan@example.org")])
    assert [r["contact_id"] for r in rows] == [1, 3, 4]

    results = by_id(world.run(rows))

    ada = world.cms.users["ada@example.org"]
    assert world.cms.mailed == [ada.uf_id]
    assert results[1]["mail"] == outcomes.MAIL_SENT
    assert results[3]["mail"] is None
    assert results[4]["mail"] == outcomes.MAIL_DO_NOT_EMAIL
    assert results[4]["outcome"] == "created"
    assert world.cms.count("send_password_mail") == 1


def test_no_mail_when_notify_is_off(world):
    results = world.run(batch_of(ADA, GRACE), notify=False)
    assert world.cms.count("send_password_mail") == 0
    assert [r["mail"] for r in results] == [outcomes.MAIL_OFF] * 2
    assert world.journal.mail_writes() == []


def test_a_failed_mail_is_noted_without_failing_the_contact(world):
    rows = batch_of(ADA, GRACE)
    world.cms.mail_errors[100] = CmsMailFailed(200, "retrieve_password_email_failure",
                                               "WordPress could not send the password mail for user 100")

    results = by_id(world.run(rows))

    assert world.cms.users["ada@example.org"].uf_id == 100
    assert results[1]["outcome"] == "created"
    assert results[1]["mail"] == outcomes.mail_failed("WordPress could not send the password mail for user 100")
    assert results[2]["mail"] == outcomes.MAIL_SENT
    assert {e.uf_id: e.mail for e in world.journal.activities.values()} == {100: "", 101: "sent"}


def slow_creates(world, monkeypatch, seconds: float) -> None:
    """Every create of `world`'s CMS takes `seconds` more, so a batch's waves come between its creates."""
    creating = world.cms.create_user

    def slow_create(**request):
        time.sleep(seconds)
        return creating(**request)

    monkeypatch.setattr(world.cms, "create_user", slow_create)


def test_mails_go_out_while_creates_go_on_with_one_ledger_write_per_wave(world, monkeypatch):
    """Every WAVE_SECONDS the batch links what its threads made and hands out their mails, in one journal
    write (the mails about to go, and the mails sent since the last wave), never one write per mail."""
    monkeypatch.setattr(batch_module, "WAVE_SECONDS", 0.02)
    slow_creates(world, monkeypatch, 0.004)
    mailing = world.cms.send_password_mail
    seen_when_mailed = []

    def checked_mail(user):  # at the moment of sending: the link saved, the journal saying "sending"
        linked = {row["uf_id"] for row in world.civicrm.rows.values()}
        states = {e.uf_id: e.mail for e in world.journal.activities.values()}
        seen_when_mailed.append((user.uf_id in linked, states.get(user.uf_id)))
        return mailing(user)

    monkeypatch.setattr(world.cms, "send_password_mail", checked_mail)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 46)]
    results = world.run(batch_of(*contacts))

    assert world.cms.count("send_password_mail") == 45 and all(r["mail"] == outcomes.MAIL_SENT for r in results)
    order = [call[0] for call in world.cms.calls]
    assert order.index("send_password_mail") < len(order) - 1 - order[::-1].index("create_user")  # interleaved
    mail_writes = [w for w in world.journal.writes if any(e.mail for e in w)]
    assert 2 <= len(mail_writes) < 20  # a handful of waves, not 45 writes (or 90)
    assert seen_when_mailed == [(True, "sending")] * 45
    assert sorted(e.uf_id for e in world.journal.activities.values() if e.mail == "sent") == sorted(
        r["uf_id"] for r in results)
    # a mail goes only to a linked account: each was saved in a CiviCRM link write before its mail
    assert sorted(world.saved_contacts()) == [p["contact_id"] for p in contacts]


def test_waves_come_more_often_once_the_creates_left_fit_in_one():
    assert wave_interval(0, 100, 0.0) == batch_module.WAVE_SECONDS  # nothing answered yet: no pace known
    assert wave_interval(50, 100, 2.2) == batch_module.WAVE_SECONDS  # 50 left at 50 in 2.2 s: 2.2 s of creates
    assert wave_interval(50, 100, 1.9) == batch_module.CLOSING_WAVE_SECONDS
    assert wave_interval(100, 100, 4.0) == batch_module.CLOSING_WAVE_SECONDS
    assert wave_interval(1, 100, 1.0) == batch_module.WAVE_SECONDS  # a slow CMS: 99 s of creates left


def test_the_last_creates_mails_do_not_wait_a_whole_wave_after_the_last_create(world, monkeypatch):
    """Mails go at waves. Were waves WAVE_SECONDS apart to the end, every mail of the creates answered after
    the last wave would go out only after the batch's last create, alone; closing waves keep that tail short."""
    monkeypatch.setattr(batch_module, "WAVE_SECONDS", 0.4)
    monkeypatch.setattr(batch_module, "CLOSING_WAVE_SECONDS", 0.02)
    slow_creates(world, monkeypatch, 0.01)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 61)]  # about 0.65 s of creates
    results = world.run(batch_of(*contacts))

    assert world.cms.count("send_password_mail") == 60 and all(r["mail"] == outcomes.MAIL_SENT for r in results)
    order = [call[0] for call in world.cms.calls if call[0] in ("create_user", "send_password_mail")]
    mails_after_last_create = order[::-1].index("create_user")
    # one wave at 0.4 s (about 37 made), then closing waves: a few mails at the end, not the last 23
    assert mails_after_last_create <= 8, "".join(c[0] for c in order)


def _sending_writes(world):
    """Watch the journal: for each write, the contacts it records as about to be created, and how many
    creates the CMS had received when it was written."""
    seen, write = [], world.journal.write

    def watched(entries, subjects):
        seen.append(({e.contact_id for e in entries if e.uf_id is None and e.usernames},
                     world.cms.count("create_user")))
        return write(entries, subjects)

    world.journal.write = watched
    return seen


@pytest.mark.parametrize("concurrency", [1, 3])
def test_creates_are_journalled_a_slice_at_a_time_each_before_it_is_sent(world, monkeypatch, concurrency):
    """A big batch does not write its whole journal before the first create: the first slice is FIRST_SLICE
    per thread, later ones double, and no create is sent before the write that records it."""
    monkeypatch.setattr(batch_module, "FIRST_SLICE", 2)
    monkeypatch.setattr(batch_module, "MAX_SLICE", 16)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 81)]
    seen = _sending_writes(world)

    results = world.run(batch_of(*contacts), concurrency=concurrency)

    assert {r["outcome"] for r in results} == {"created"} and world.cms.count("create_user") == 80
    slices = [(ids, creates_before) for ids, creates_before in seen if ids]
    assert len(slices[0][0]) == batch_module.FIRST_SLICE * concurrency and slices[0][1] == 0
    assert all(len(ids) <= 16 for ids, _ in slices) and 5 <= len(slices) < 40  # slices, not 80 writes nor one
    assert sorted(cid for ids, _ in slices for cid in ids) == list(range(1, 81))  # each recorded once
    # no create goes out before its slice is written: when each slice was written, the CMS had received at
    # most the creates of the slices before it
    recorded = 0
    for ids, creates_before in slices:
        assert creates_before <= recorded
        recorded += len(ids)


def test_a_batch_killed_mid_way_leaves_only_its_last_slices_in_doubt(world, monkeypatch):
    """A kill mid-batch leaves in doubt (journal says sending, no answer) only creates already handed to the
    threads, not the whole batch; the retry looks those up and creates the rest once each."""
    monkeypatch.setattr(batch_module, "FIRST_SLICE", 4)
    monkeypatch.setattr(batch_module, "MAX_SLICE", 8)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 61)]
    rows = batch_of(*contacts)
    creating, made = world.cms.create_user, []

    def dies_at_the_20th(**request):
        if len(made) == 20:
            raise Stopped()
        made.append(request["email"])
        return creating(**request)

    monkeypatch.setattr(world.cms, "create_user", dies_at_the_20th)
    with pytest.raises(Stopped):
        world.run(rows)
    in_doubt = {e.contact_id for e in world.journal.activities.values() if e.pending}
    assert 0 < len(in_doubt) <= 8 + 8  # what was handed out but unanswered: a slice or so, not 40

    monkeypatch.setattr(world.cms, "create_user", creating)
    results = world.run(rows)

    assert {r["outcome"] for r in results} == {"created"}
    assert sorted(r["email"] for r in rows) == sorted(world.cms.users)  # one account per contact
    assert all(world.cms.count("create_user", c["email"]) <= 1 for c in contacts)  # none posted twice
    assert world.cms.count("find_by_email") == len(in_doubt)  # only the doubtful were looked up


def test_a_batch_stopped_mid_wave_leaves_no_mail_lost_or_doubled(world, monkeypatch):
    """A refused credential stops the batch while mails are handed out: those never sent are recorded as
    not sent, so the retry sends them; those sent are never sent again."""
    monkeypatch.setattr(batch_module, "WAVE_SECONDS", 0.01)
    slow_creates(world, monkeypatch, 0.004)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 61)]
    world.cms.script(contacts[45]["email"], CmsAuthError(401, "invalid_auth", "Sorry, you are not allowed"))
    rows = batch_of(*contacts)
    with pytest.raises(CmsAuthError):
        world.run(rows)
    assert 0 < world.cms.count("send_password_mail") < 45  # some mails had gone out when it stopped

    results = world.run(rows)

    assert sorted(world.cms.mailed) == sorted(r["uf_id"] for r in results)  # each account mailed once
    assert {r["outcome"] for r in results} == {"created"}
    assert {r["mail"] for r in results} <= {outcomes.MAIL_SENT, outcomes.MAIL_SENT_EARLIER}


def test_accounts_the_journal_says_were_mailed_are_not_mailed_again(world):
    rows = batch_of(ADA)
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace",), uf_id=500,
                                   username="ada.lovelace", mail="sent"))
    world.civicrm.link(1, 500, "ada@example.org")

    [result] = world.run(rows)

    assert result["mail"] == outcomes.MAIL_SENT_EARLIER
    assert world.cms.count("send_password_mail") == 0


def test_a_mail_sent_by_a_later_run_holds_when_an_old_batch_is_cleared(world):
    """Run 1 created Ada and died before mailing; run 2 adopted and mailed her; then run 1 is cleared."""
    rows = batch_of(ADA)
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace",), uf_id=500, username="ada.lovelace",
                                   mail="sent", markers=("[Airflow run cmsuser_nightly / run 2]",)))
    world.civicrm.link(1, 500, "ada@example.org")

    [result] = world.run(rows)  # run 1's cleared batch

    assert result["outcome"] == "created" and result["mail"] == outcomes.MAIL_SENT_EARLIER
    assert world.cms.mailed == []


def test_accounts_left_sending_by_a_stopped_try_are_not_mailed_again(world):
    rows = batch_of(ADA, GRACE, ALAN)
    world.cms.mail_errors[101] = Stopped()  # the worker dies while mailing Grace

    with pytest.raises(Stopped):
        world.run(rows)
    mailed_before_the_stop = list(world.cms.mailed)
    assert mailed_before_the_stop == [100]
    assert sorted(e.uf_id for e in world.journal.activities.values() if e.mail == "sending") == [100, 101, 102]

    del world.cms.mail_errors[101]
    results = world.run(rows)

    assert [r["mail"] for r in results] == [outcomes.MAIL_UNKNOWN] * 3
    assert [r["outcome"] for r in results] == ["created"] * 3
    assert world.cms.mailed == mailed_before_the_stop  # nobody got a second mail


def test_unknown_mails_stay_unknown_after_a_later_try_mails_others(world):
    """Try 2 mails a newly created account; try 3 must still remember what try 1 left unknown."""
    rows = batch_of(ADA, GRACE)
    world.journal.add(JournalEntry(contact_id=1, usernames=("ada.lovelace",), uf_id=500, username="ada.lovelace",
                                   mail="sending"))
    world.civicrm.link(1, 500, "ada@example.org")
    world.cms.script("grace@example.org", CmsUnavailable(503, None, "HTTP 503"))
    with pytest.raises(BatchIncomplete):
        world.run(rows)
    assert world.cms.count("send_password_mail") == 0

    results = by_id(world.run(rows))  # try 3: Grace gets created and mailed

    assert results[1]["mail"] == outcomes.MAIL_UNKNOWN
    assert world.cms.mailed == [results[2]["uf_id"]]

    results = by_id(world.run(rows))  # a cleared task runs once more

    assert results[1]["mail"] == outcomes.MAIL_UNKNOWN
    assert results[2]["mail"] == outcomes.MAIL_SENT_EARLIER
    assert world.cms.mailed == [results[2]["uf_id"]]


def test_an_account_linked_by_an_earlier_try_without_its_mail_is_mailed_now(world):
    existing = world.cms.add_user("alan_t", "alan@example.org")
    rows = batch_of(ADA, ALAN, users=[(existing.uf_id, "alan_t", "alan@example.org")])
    world.journal.pending(1, "ada.lovelace")  # sent; the try linked it and died before recording the id
    world.civicrm.link(1, 500, "ada@example.org")
    world.civicrm.link(3, existing.uf_id, "alan@example.org")

    results = by_id(world.run(rows))

    assert results[1]["mail"] == outcomes.MAIL_SENT and results[1]["username"] == "ada.lovelace"
    assert world.cms.calls == [("send_password_mail", 500)]  # nothing to read back: the journal knew it
    assert results[3]["mail"] is None
    assert [e.mail for e in world.journal.of(1)] == ["sent"]


# ------------------------------------------------------------------------- many creates per call


class FakeBulkCms(FakeCms):
    """A CMS that takes many creates per call (as Backdrop's bee does), each standing alone.

    `die_after` makes the next bulk call create that many accounts and then break off (the SSH
    connection dropped); `timeout_after` the same, but as a timeout (the call may still be running).
    """

    bulk_size = 2

    def __init__(self):
        super().__init__()
        self.die_after: int | None = None
        self.timeout_after: int | None = None
        self.mail_call_dies = False

    def create_users(self, requests):
        self.calls.append(("create_users", tuple(r.email for r in requests)))
        answers = []
        for n, request in enumerate(requests):
            for limit, code in ((self.die_after, None), (self.timeout_after, "timeout")):
                if limit is not None and n == limit:
                    self.die_after = self.timeout_after = None
                    raise CmsUnavailable(None, code, "the SSH connection dropped")
            try:
                answers.append(self.create_user(**{**vars(request), "roles": list(request.roles)}))
            except CmsError as exc:
                answers.append(exc)
        return answers

    def send_password_mails(self, users, *, reset=False):
        self.calls.append(("send_password_mails", tuple(u.uf_id for u in users)))
        if self.mail_call_dies:
            self.mailed.extend(u.uf_id for u in users[:1])  # one went out before the call broke off
            raise CmsUnavailable(None, None, "the SSH connection dropped")
        failed = {}
        for user in users:
            try:
                self.send_password_mail(user)
            except CmsError as exc:
                failed[user.uf_id] = exc
        return failed

    def find_users(self, emails, usernames):
        self.calls.append(("find_users", tuple(emails)))
        return [self.users[e.lower()] for e in emails if e.lower() in self.users]


@pytest.fixture
def bulk_world() -> World:
    world = World()
    world.cms = FakeBulkCms()
    return world


def test_a_bulk_backend_gets_its_creates_in_chunks_and_its_mails_in_one_call(bulk_world):
    rows = batch_of(ADA, GRACE, ALAN)
    results = bulk_world.run(rows)

    assert [r["outcome"] for r in results] == ["created"] * 3
    assert [r["mail"] for r in results] == [outcomes.MAIL_SENT] * 3
    assert [c[0] for c in bulk_world.cms.calls if c[0] in ("create_users", "send_password_mails")] == \
        ["create_users", "create_users", "send_password_mails"]
    assert [len(c[1]) for c in bulk_world.cms.calls if c[0] == "create_users"] == [2, 1]
    assert sorted(bulk_world.cms.mailed) == sorted(r["uf_id"] for r in results)
    assert len(bulk_world.civicrm.rows) == 3


def test_a_conflict_in_a_bulk_call_is_finished_one_by_one_with_a_suffix(bulk_world):
    bulk_world.cms.add_user("ada.lovelace", "someone.else@example.org")
    [result] = bulk_world.run(batch_of(ADA))
    assert (result["outcome"], result["username"]) == ("created", "ada.lovelace2")
    assert bulk_world.cms.creates("ada@example.org") == ["ada.lovelace", "ada.lovelace", "ada.lovelace2"]


def test_a_rejection_in_a_bulk_call_is_that_contacts_failure_alone(bulk_world):
    bulk_world.cms.script("grace@example.org", CmsRejected(400, "invalid_email", "The email is not valid."))
    results = by_id(bulk_world.run(batch_of(ADA, GRACE)))
    assert results[1]["outcome"] == "created"
    assert results[2]["outcome"] == "failed" and "The email is not valid." in results[2]["reason"]
    assert bulk_world.cms.count("create_user", "grace@example.org") == 1  # not sent twice


def test_a_bulk_call_that_breaks_off_links_what_it_made_and_the_retry_makes_the_rest_once(bulk_world):
    rows = batch_of(ADA, GRACE, ALAN)
    bulk_world.cms.bulk_size = 3
    bulk_world.cms.die_after = 2  # Ada and Grace are made, then the connection drops

    with pytest.raises(BatchIncomplete, match="1 of 3 contacts"):
        bulk_world.run(rows)
    assert set(bulk_world.civicrm.rows) == {1, 2}  # found by email at once, linked as ours
    assert ("find_users", ("ada@example.org", "grace@example.org", "alan@example.org")) in bulk_world.cms.calls

    results = by_id(bulk_world.run(rows))  # Airflow's retry
    assert {cid: r["outcome"] for cid, r in results.items()} == {1: "created", 2: "created", 3: "created"}
    for email in ("ada@example.org", "grace@example.org", "alan@example.org"):
        assert len(bulk_world.cms.creates(email)) == 1
    assert sorted(bulk_world.cms.mailed) == sorted(r["uf_id"] for r in results.values())


def test_a_bulk_call_that_timed_out_is_not_looked_up_until_the_retry_has_waited_it_out(bulk_world):
    rows = batch_of(ADA, GRACE)
    bulk_world.cms.timeout_after = 1
    with pytest.raises(BatchIncomplete):
        bulk_world.run(rows)
    assert bulk_world.cms.count("find_users") == 0 and bulk_world.timed_out is not None
    assert bulk_world.civicrm.rows == {}

    results = bulk_world.run(rows, client_timeout=30.0)
    assert [r["outcome"] for r in results] == ["created", "created"]
    assert bulk_world.sleeps and bulk_world.sleeps[0] > 0  # waited for the slow create before looking
    assert len(bulk_world.cms.creates("ada@example.org")) == 1


def test_a_bulk_mail_call_that_breaks_off_leaves_the_mails_in_doubt_and_never_resends(bulk_world):
    rows = batch_of(ADA, GRACE)
    bulk_world.cms.mail_call_dies = True
    results = bulk_world.run(rows)
    assert [r["outcome"] for r in results] == ["created", "created"]
    assert all(r["mail"].startswith("the request for the password email broke off") for r in results)

    bulk_world.cms.mail_call_dies = False
    again = bulk_world.run(rows)  # a clear in the UI: the mails stay unsent rather than doubled
    assert [r["mail"] for r in again] == [outcomes.MAIL_UNKNOWN] * 2
    assert bulk_world.cms.count("send_password_mails") == 1


def test_later_mail_chunks_hold_about_two_seconds_of_mails(world):
    assert next_mail_chunk(20, 0.5) == int(MAIL_CHUNK_SECONDS * 40)  # 25 ms a mail: 80 in two seconds
    assert next_mail_chunk(20, 20.0) == MAIL_CHUNK  # a slow CMS: never fewer than the first chunk
    assert next_mail_chunk(20, 0.0001) == next_mail_chunk(0, 0) == MAX_MAIL_CHUNK
    # accounts an earlier try made and linked but did not mail: their mails go in chunks after the links
    # (the creates of a try mail in waves instead: test_mails_go_out_while_creates_go_on_...)
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 146)]
    for contact in contacts:
        user = world.cms.add_user(f"first{contact['contact_id']}.last", contact["email"])
        world.journal.add(JournalEntry(contact_id=contact["contact_id"], usernames=(user.username,),
                                       uf_id=user.uf_id, username=user.username))
        world.civicrm.link(contact["contact_id"], user.uf_id, contact["email"])
    results = world.run(batch_of(*contacts))  # the fake CMS answers at once: one chunk of 20, then the other 125
    assert [len(w) for w in world.journal.mail_writes()[0::2]] == [20, 125]
    assert {r["mail"] for r in results} == {outcomes.MAIL_SENT}

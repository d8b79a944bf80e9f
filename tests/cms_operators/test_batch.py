"""create_batch against an in-memory CMS and UFMatch table: idempotent creates, retries, doubts, mails.

The fakes record every call, so the tests can say not only what came out but what was sent (and what
was not sent twice). Rows come from the real planner, as the create task gets them.
"""

from __future__ import annotations

import copy
import math

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
from cms_operators.batch import USERNAME_TRIES, BatchContext, BatchIncomplete, MailLedger, create_batch
from provisioning import outcomes
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
    max_email_length = 100
    max_username_length = 60

    def __init__(self):
        self.users: dict[str, CmsUser] = {}  # email (lower-case) -> account
        self.answers: dict[str, list] = {}
        self.lookup_errors: dict[str, list[CmsError]] = {}
        self.mail_errors: dict[int, BaseException] = {}
        self.calls: list[tuple] = []
        self.created_with: list[dict] = []
        self.mailed: list[int] = []
        self._next_id = 100

    def add_user(self, username: str, email: str) -> CmsUser:
        user = CmsUser(uf_id=self._next_id, username=username, email=email)
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

    def find_by_email(self, email: str) -> CmsUser | None:
        self.calls.append(("find_by_email", email))
        errors = self.lookup_errors.get(email.lower())
        if errors:
            raise errors.pop(0)
        return self.users.get(email.lower())

    def create_user(self, *, username, email, first_name, last_name, display_name, roles, locale=None):
        self.calls.append(("create_user", username, email))
        self.created_with.append({"username": username, "email": email, "first_name": first_name,
                                  "last_name": last_name, "display_name": display_name, "roles": roles,
                                  "locale": locale})
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

    def save_links(self, links: list[dict]) -> dict[int, str]:
        self.saves.append(copy.deepcopy(links))
        errors = {}
        for link in links:
            if link["contact_id"] in self.refuse:
                errors[link["contact_id"]] = self.refuse[link["contact_id"]]
            else:
                self.rows[link["contact_id"]] = dict(link)
        return errors


class LedgerStore:
    """Where the task keeps the mail ledger between tries (Airflow's task state store in production)."""

    def __init__(self, state: dict | None = None):
        self.state = copy.deepcopy(state)
        self.writes: list[dict] = []

    def load(self) -> dict | None:
        return copy.deepcopy(self.state)

    def store(self, state: dict) -> None:
        self.state = copy.deepcopy(state)
        self.writes.append(copy.deepcopy(state))


class Stopped(BaseException):
    """The worker died mid-task (not an error the batch could catch)."""


class World:
    def __init__(self):
        self.cms = FakeCms()
        self.civicrm = FakeUFMatch()
        self.ledger = LedgerStore()

    def run(self, rows: list[dict], *, retried: bool = False, final_try: bool = False,
            notify: bool = True) -> list[dict]:
        ctx = BatchContext(backend=self.cms, linked_accounts=self.civicrm.linked_accounts,
                           save_links=self.civicrm.save_links,
                           mail_ledger=MailLedger(load=self.ledger.load, store=self.ledger.store),
                           notify=notify, retried=retried, final_try=final_try)
        return create_batch(copy.deepcopy(rows), ctx)

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
                         Settings(trigger_groups=["new_members"], roles=["subscriber", "member"]))
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
                                       "roles": ["subscriber", "member"], "locale": "de_DE"}]


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
    assert world.cms.calls == [] and world.civicrm.saves == [] and world.ledger.writes == []


# ---------------------------------------------------------------------------------- retried tries


def test_contacts_linked_by_an_earlier_try_are_not_sent_again_and_keep_their_planned_outcome(world):
    existing = world.cms.add_user("grace_h", "grace@example.org")
    rows = batch_of(ADA, GRACE, users=[(existing.uf_id, "grace_h", "grace@example.org")])
    world.civicrm.link(1, 500, "ada@example.org")
    world.civicrm.link(2, existing.uf_id, "grace@example.org")
    world.cms.calls.clear()

    results = by_id(world.run(rows, retried=True, notify=False))

    assert results[1]["outcome"] == "created" and results[1]["uf_id"] == 500
    assert results[2]["outcome"] == "linked_existing" and results[2]["uf_id"] == existing.uf_id
    assert {r["reason"] for r in results.values()} == {outcomes.linked_by_earlier_try()}
    # the created account is only read back (for its real login); nothing is created or linked again
    assert world.cms.calls == [("find_by_email", "ada@example.org")]
    assert world.civicrm.saves == []  # nothing new to link


def test_an_account_made_earlier_reports_its_real_login(world):
    """An earlier try met a login taken since planning, created `ada.lovelace2`, then stopped."""
    made = world.cms.add_user("ada.lovelace2", "ada@example.org")
    world.civicrm.link(1, made.uf_id, "ada@example.org")

    results = by_id(world.run(batch_of(ADA), retried=True, notify=False))

    assert (results[1]["username"], results[1]["uf_id"]) == ("ada.lovelace2", made.uf_id)
    assert world.cms.creates("ada@example.org") == []


def test_retried_try_looks_up_by_email_first_and_links_what_it_finds(world):
    rows = batch_of(ADA, GRACE)
    made_by_first_try = world.cms.add_user("ada.lovelace", "ada@example.org")  # its link was never written

    results = by_id(world.run(rows, retried=True))

    assert results[1]["outcome"] == "created" and results[1]["uf_id"] == made_by_first_try.uf_id
    assert results[1]["reason"] == outcomes.found_after_retry()
    assert world.cms.creates("ada@example.org") == []  # never a second account
    assert world.cms.count("find_by_email", "grace@example.org") == 1  # looked, found nothing, created
    assert world.cms.creates("grace@example.org") == ["grace.hopper"]
    assert results[2]["reason"] == outcomes.reason_created()
    assert world.civicrm.rows[1]["uf_id"] == made_by_first_try.uf_id


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


def test_duplicate_email_is_looked_up_and_linked_as_created(world):
    rows = batch_of(ADA)
    since_planning = world.cms.add_user("ada", "ADA@example.org")

    [result] = world.run(rows)

    assert result["outcome"] == "created" and result["uf_id"] == since_planning.uf_id
    assert result["reason"] == outcomes.found_after_doubt()
    assert result["username"] == "ada"  # the account's real login, not the planned one
    assert len(world.cms.creates("ada@example.org")) == 1
    assert world.civicrm.rows[1]["uf_id"] == since_planning.uf_id


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

    results = by_id(world.run(rows, retried=True, final_try=True))

    assert results[2]["outcome"] == "failed"
    assert results[2]["reason"] == outcomes.cms_error_after_retries("timed out after 30 s")
    assert results[1]["outcome"] == "created"


def test_transient_lookup_error_on_a_retried_try_counts_as_transient(world):
    rows = batch_of(ADA, GRACE)
    world.cms.lookup_errors["grace@example.org"] = [CmsUnavailable(502, None, "HTTP 502 Bad Gateway")]

    with pytest.raises(BatchIncomplete):
        world.run(rows, retried=True)

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
    assert results[3]["mail"] is None and results[4]["mail"] is None
    assert results[4]["outcome"] == "created"
    assert world.cms.count("send_password_mail") == 1


def test_no_mail_when_notify_is_off(world):
    results = world.run(batch_of(ADA, GRACE), notify=False)
    assert world.cms.count("send_password_mail") == 0
    assert [r["mail"] for r in results] == [None, None]
    assert world.ledger.writes == []


def test_a_failed_mail_is_noted_without_failing_the_contact(world):
    rows = batch_of(ADA, GRACE)
    world.cms.mail_errors[100] = CmsMailFailed(200, "retrieve_password_email_failure",
                                               "WordPress could not send the password mail for user 100")

    results = by_id(world.run(rows))

    assert world.cms.users["ada@example.org"].uf_id == 100
    assert results[1]["outcome"] == "created"
    assert results[1]["mail"] == outcomes.mail_failed("WordPress could not send the password mail for user 100")
    assert results[2]["mail"] == outcomes.MAIL_SENT
    assert world.ledger.state == {"sent": [101], "sending": []}


def test_the_mail_ledger_is_written_twice_per_chunk_not_once_per_mail(world):
    contacts = [person(i, f"First{i}", f"Last{i}") for i in range(1, 46)]
    results = world.run(batch_of(*contacts))

    assert world.cms.count("send_password_mail") == 45
    chunks = math.ceil(45 / MailLedger.CHUNK)
    assert len(world.ledger.writes) == 2 * chunks == 6
    begins = world.ledger.writes[0::2]
    assert [len(w["sending"]) for w in begins] == [20, 20, 5]
    assert world.ledger.state == {"sent": sorted(r["uf_id"] for r in results), "sending": []}
    # each chunk is announced before its first mail: the first "sending" names the first 20 accounts
    assert begins[0]["sending"] == sorted(r["uf_id"] for r in results[:20])


def test_accounts_the_ledger_says_were_mailed_are_not_mailed_again(world):
    rows = batch_of(ADA)
    world.civicrm.link(1, 500, "ada@example.org")
    world.ledger = LedgerStore({"sent": [500], "sending": []})

    [result] = world.run(rows, retried=True)

    assert result["mail"] == outcomes.MAIL_SENT_EARLIER
    assert world.cms.count("send_password_mail") == 0


def test_accounts_left_sending_by_a_stopped_try_are_not_mailed_again(world):
    rows = batch_of(ADA, GRACE, ALAN)
    world.cms.mail_errors[101] = Stopped()  # the worker dies while mailing Grace

    with pytest.raises(Stopped):
        world.run(rows)
    mailed_before_the_stop = list(world.cms.mailed)
    assert mailed_before_the_stop == [100]
    assert sorted(world.ledger.state["sending"]) == [100, 101, 102]

    del world.cms.mail_errors[101]
    results = world.run(rows, retried=True)

    assert [r["mail"] for r in results] == [outcomes.MAIL_UNKNOWN] * 3
    assert [r["outcome"] for r in results] == ["created"] * 3
    assert world.cms.mailed == mailed_before_the_stop  # nobody got a second mail


def test_unknown_mails_stay_unknown_after_a_later_try_mails_others(world):
    """Try 2 mails a newly created account; try 3 must still remember what try 1 left unknown."""
    rows = batch_of(ADA, GRACE)
    world.civicrm.link(1, 500, "ada@example.org")
    world.ledger = LedgerStore({"sent": [], "sending": [500]})
    world.cms.script("grace@example.org", CmsUnavailable(503, None, "HTTP 503"))
    with pytest.raises(BatchIncomplete):
        world.run(rows, retried=True)
    assert world.cms.count("send_password_mail") == 0

    results = by_id(world.run(rows, retried=True))  # try 3: Grace gets created and mailed

    assert results[1]["mail"] == outcomes.MAIL_UNKNOWN
    assert world.cms.mailed == [results[2]["uf_id"]]

    results = by_id(world.run(rows, retried=True))  # a cleared task runs once more

    assert results[1]["mail"] == outcomes.MAIL_UNKNOWN
    assert results[2]["mail"] == outcomes.MAIL_SENT_EARLIER
    assert world.cms.mailed == [results[2]["uf_id"]]


def test_an_account_linked_by_an_earlier_try_without_its_mail_is_mailed_now(world):
    existing = world.cms.add_user("alan_t", "alan@example.org")
    rows = batch_of(ADA, ALAN, users=[(existing.uf_id, "alan_t", "alan@example.org")])
    world.civicrm.link(1, 500, "ada@example.org")
    world.civicrm.link(3, existing.uf_id, "alan@example.org")

    results = by_id(world.run(rows, retried=True))

    assert results[1]["mail"] == outcomes.MAIL_SENT
    # read back, then mailed; a linked existing account gets none
    assert world.cms.calls == [("find_by_email", "ada@example.org"), ("send_password_mail", 500)]
    assert results[3]["mail"] is None
    assert world.ledger.state == {"sent": [500], "sending": []}

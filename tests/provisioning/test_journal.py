"""The account journal line: written and read back, and the rule that says an account is ours."""

from __future__ import annotations

import pytest

from provisioning import journal
from provisioning.journal import JournalEntry

MARKER = "[Airflow run cmsuser_nightly / scheduled__2026-03-01T02:00:00+00:00]"


def test_a_line_reads_back_as_the_same_entry():
    entry = JournalEntry(contact_id=7, usernames=("jane.doe", "jane doe|2"), sent="2026-03-01T02:00:05Z",
                         uf_id=45, username="jane doe|2", mail="sent")
    details = journal.details_text("new account; password email sent", entry, [MARKER])
    back = journal.parse(7, details, activity_id=99, status="Completed")
    assert back == JournalEntry(contact_id=7, activity_id=99, status="Completed",
                                usernames=("jane.doe", "jane doe|2"), sent="2026-03-01T02:00:05Z", uf_id=45,
                                username="jane doe|2", mail="sent", markers=(MARKER,))


def test_details_keep_the_human_text_first_and_each_marker_once():
    entry = JournalEntry(contact_id=7, usernames=("ada",), sent="2026-03-01T02:00:05Z")
    text = journal.details_text("the reason", entry, [MARKER, MARKER, "[Airflow run d / r2]"])
    assert text == ("the reason\n[cmsuser account usernames=ada sent=2026-03-01T02:00:05Z]\n"
                    f"{MARKER}\n[Airflow run d / r2]")


def test_details_without_a_journal_line_have_no_entry():
    assert journal.parse(7, f"no primary email\n{MARKER}") is None
    assert journal.parse(7, None) is None


def test_an_entry_with_a_sent_name_and_no_answer_is_pending():
    assert JournalEntry(contact_id=1, usernames=("ada",), sent="2026-03-01T02:00:00Z").pending
    assert not JournalEntry(contact_id=1, usernames=("ada",), uf_id=3, username="ada").pending
    assert not JournalEntry(contact_id=1).pending


@pytest.mark.parametrize(("account", "ours"), [
    ((45, "jane.doe", "2026-03-01T02:00:07"), True),          # the name we sent, registered after
    ((45, "Jane.Doe", "2026-03-01T02:00:07+00:00"), True),    # logins compare case-insensitively
    ((45, "jane.doe", "2026-03-01T01:57:00"), True),          # within the clock skew
    ((45, "jane.doe", "2026-02-20T10:00:00"), False),         # registered long before we sent it
    ((45, "jane.doe2", "2026-03-01T02:00:07"), False),        # a name we never sent
    ((45, "jane.doe", None), True),                           # a CMS that gives no registration time
])
def test_an_account_is_ours_only_by_a_name_we_sent_and_not_before_we_sent_it(account, ours):
    entry = JournalEntry(contact_id=1, usernames=("jane.doe",), sent="2026-03-01T02:00:05Z")
    assert entry.owns(*account) is ours


def test_once_the_id_is_known_only_that_id_is_ours():
    entry = JournalEntry(contact_id=1, usernames=("jane.doe",), sent="2026-03-01T02:00:05Z", uf_id=45,
                         username="jane.doe")
    assert entry.owns(45, "whatever")
    assert not entry.owns(46, "jane.doe", "2026-03-01T02:00:07")


def test_the_mail_state_of_an_account_is_the_strongest_over_all_entries():
    entries = [JournalEntry(contact_id=1, activity_id=1, uf_id=45, mail=""),
               JournalEntry(contact_id=1, activity_id=2, uf_id=45, mail="sending"),
               JournalEntry(contact_id=1, activity_id=3, uf_id=46, mail="sent")]
    assert journal.mail_state(entries, 45) == "sending"
    assert journal.mail_state(entries + [JournalEntry(contact_id=1, uf_id=45, mail="sent")], 45) == "sent"
    assert journal.mail_state(entries, 47) == ""


def test_owner_entry_prefers_the_newest_entry_that_names_the_account():
    old = JournalEntry(contact_id=1, activity_id=5, usernames=("ada",), sent="2026-03-01T02:00:00Z")
    new = JournalEntry(contact_id=1, activity_id=9, usernames=("ada",), sent="2026-03-02T02:00:00Z")
    assert journal.owner_entry([old, new], 3, "ada", "2026-03-02T02:00:01") == new
    assert journal.owner_entry([old, new], 3, "grace", "2026-03-02T02:00:01") is None


def test_entries_travel_through_xcom_as_plain_dicts():
    entry = JournalEntry(contact_id=4, activity_id=8, status="Scheduled", usernames=("ada",),
                         sent="2026-03-01T02:00:00Z", mail="")
    assert JournalEntry.from_dict(4, entry.to_dict()) == entry


def test_seconds_until_counts_down_from_a_moment():
    assert journal.seconds_until(None, 30) == 0
    assert journal.seconds_until("2000-01-01T00:00:00Z", 30) == 0
    assert 29 < journal.seconds_until(journal.now_utc(), 30) <= 30

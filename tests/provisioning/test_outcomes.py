import json

import numpy as np
import pytest

from provisioning import outcomes as why
from provisioning.outcomes import Outcome, activity_for, audit_line, audit_records


def test_outcome_values_are_the_documented_names():
    assert [outcome.value for outcome in Outcome] == [
        "created",
        "linked_existing",
        "already_linked",
        "failed",
        "deferred",
        "approval_rejected",
        "not_triggered",
        "left_to_nightly",
    ]
    assert Outcome("failed") is Outcome.FAILED
    assert json.dumps({"outcome": Outcome.CREATED}) == '{"outcome": "created"}'


@pytest.mark.parametrize(
    ("outcome", "status", "subject"),
    [
        (Outcome.CREATED, "Completed", "Created : jane.doe (45)"),
        (Outcome.LINKED_EXISTING, "Completed", "Linked : jane.doe (45)"),
        (Outcome.ALREADY_LINKED, "Completed", "Already linked : jane@example.org (45)"),
        (Outcome.FAILED, "Failed", "Failed to create User jane.doe"),
        ("created", "Completed", "Created : jane.doe (45)"),
    ],
)
def test_activity_status_and_subject(outcome, status, subject):
    activity = activity_for(
        outcome, username="jane.doe", uf_id=45, uf_name="jane@example.org", reason="why not"
    )
    assert activity == {"status": status, "subject": subject, "details": "why not"}


@pytest.mark.parametrize("username", ["", None])
def test_failed_activity_without_username_has_no_trailing_space(username):
    activity = activity_for(
        Outcome.FAILED, username=username, uf_id=None, uf_name=None, reason=why.NO_PRIMARY_EMAIL
    )
    assert activity["subject"] == "Failed to create User"
    assert activity["details"] == "no primary email"


def test_deferred_contacts_get_no_activity():
    assert (
        activity_for(Outcome.DEFERRED, username="x", uf_id=None, uf_name=None, reason=why.beyond_limit(5))
        is None
    )


def test_mail_failure_is_appended_to_the_details():
    note = why.mail_failed("SMTP down")
    activity = activity_for(
        Outcome.CREATED, username="jane.doe", uf_id=45, uf_name=None, reason=why.NEW_ACCOUNT, mail_note=note
    )
    assert activity["status"] == "Completed"
    assert activity["details"] == f"new account; {note}"
    assert "SMTP down" in activity["details"]


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        activity_for("exploded", username="x", uf_id=1, uf_name=None, reason="r")


def test_audit_line_for_a_created_account():
    line = audit_line(123, Outcome.CREATED, uf_id=45, attempt=1, max_attempts=4)
    assert line == "contact=123 outcome=created uf_id=45"


def test_audit_line_for_a_failure_shows_the_attempt():
    line = audit_line(7, "failed", attempt=2, max_attempts=4)
    assert line == "contact=7 outcome=failed attempt=2/4"


def test_audit_line_takes_no_reason_so_no_email_can_reach_the_log():
    # reasons quote emails ("invalid email 'x@y'"); the audit line carries ids and outcome only
    with pytest.raises(TypeError):
        audit_line(7, "failed", reason=why.invalid_email("ada@example.org"))


def test_audit_line_takes_no_login_so_no_member_name_reaches_the_log_in_bulk():
    # a generated login is the member's name (ada.lovelace); it stays in the activity and the outcomes file
    with pytest.raises(TypeError):
        audit_line(7, "created", uf_id=45, username="ada.lovelace")


def test_audit_line_leaves_out_missing_fields():
    assert audit_line(7, Outcome.DEFERRED) == "contact=7 outcome=deferred"
    assert audit_line(7, Outcome.FAILED, attempt=3) == "contact=7 outcome=failed attempt=3"


def test_audit_records_keep_one_line_per_contact_in_few_records():
    lines = [audit_line(cid, Outcome.CREATED, uf_id=cid + 100) for cid in range(1, 451)]
    records = audit_records(lines, per_record=200)
    assert [len(r.splitlines()) for r in records] == [200, 200, 50]
    assert [line for r in records for line in r.splitlines()] == lines
    assert audit_records([]) == []


def test_values_that_went_through_a_dataframe_print_cleanly():
    # A None uf_id next to ints becomes NaN in a DataFrame, and the ints become floats.
    nan = float("nan")
    line = audit_line(np.int64(5), "created", uf_id=45.0)
    assert line == "contact=5 outcome=created uf_id=45"
    assert audit_line(6, "failed", uf_id=nan, attempt=np.float64(2.0), max_attempts=4) == (
        "contact=6 outcome=failed attempt=2/4"
    )
    activity = activity_for(
        "created", username="jdoe", uf_id=45.0, uf_name=nan, reason="new account", mail_note=nan
    )
    assert activity == {"status": "Completed", "subject": "Created : jdoe (45)", "details": "new account"}
    failed = activity_for("failed", username=nan, uf_id=nan, uf_name=None, reason="no primary email")
    assert failed["subject"] == "Failed to create User"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (why.already_linked("jane@example.org", 45), ["account jane@example.org (45)"]),
        (why.already_linked("", 45), ["already linked to CMS account 45"]),
        (why.invalid_email("a@b"), ["invalid email 'a@b'"]),
        (why.email_too_long(100), ["longer than 100 characters"]),
        (why.email_shared("a@example.org", 101), ["a@example.org", "contact 101", "its own primary email"]),
        (why.account_linked_to_other("jd", 4, 77), ["CMS account jd (4) is already linked to contact 77"]),
        (why.account_is_administrator("boss", 1), ["boss (1) is an administrator", "by hand"]),
        (why.existing_email_not_linked("jd", 4), ["(jd, 4)", "on_existing_email is 'fail'"]),
        (why.email_is_login_of("a@example.org", 55), ["a@example.org", "contact 55's CMS link"]),
        (why.empty_username("{last_name}"), ["'{last_name}'", "change username_pattern"]),
        (why.beyond_limit(10), ["beyond limit 10", "next run"]),
        (why.cms_error_after_retries("HTTP 503"), ["HTTP 503", "retries"]),
        (why.username_rejected("jöhn", "illegal characters"), ["'jöhn'", "illegal characters"]),
        (why.batch_not_finished("contacts 1-3 (3)"), ["batch contacts 1-3 (3) did not finish", "next run"]),
        (why.batch_not_finished(), ["its batch did not finish"]),
        (why.reason_created(), ["new account"]),
        (why.reason_linked_existing(), ["existing account with the same email"]),
        (why.linked_by_earlier_try(), ["earlier try"]),
        (why.found_after_retry(), ["earlier try", "email"]),
        (why.found_after_doubt(), ["unclear answer"]),
        (why.cms_rejected("HTTP 400 rest_invalid_param"), ["HTTP 400 rest_invalid_param"]),
        (why.username_taken("jane.doe", 5), ["jane.doe", "5 times"]),
        (why.duplicate_email_not_found(), ["already in use", "by hand"]),
        (why.link_failed("jdoe", "DB error"), ["CMS account jdoe", "DB error"]),
        (why.link_failed(None, "DB error"), ["the CMS account exists"]),
        (why.reset_subject(4), ["4 failed attempts"]),
        (why.reset_details(4), ["4 failed attempts", "afresh"]),
        (why.mail_failed("timeout"), ["timeout", "email"]),
    ],
)
def test_reason_texts_carry_their_details(text, fragments):
    for fragment in fragments:
        assert fragment in text

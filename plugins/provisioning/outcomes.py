"""Every reason text, the activity written per attempt, and the audit log line (names: vocabulary.py).

Reasons live here (and only here) so the plan, the batch and finalize word things the same way.
"""

from __future__ import annotations

import math
from typing import Any

from provisioning.vocabulary import ApprovalDecision, Outcome  # Outcome re-exported: names live in vocabulary

#: The order outcomes are listed in summaries.
OUTCOME_ORDER: tuple[Outcome, ...] = tuple(Outcome)

#: What a dry run calls each planned outcome: it did nothing, so it never says "created".
DRY_RUN_LABELS = {
    Outcome.CREATED: "would create",
    Outcome.LINKED_EXISTING: "would link",
    Outcome.ALREADY_LINKED: "already linked",
    Outcome.FAILED: "would fail",
    Outcome.DEFERRED: "would defer",
    Outcome.APPROVAL_REJECTED: "approval rejected",  # never planned: a dry run asks nobody
    Outcome.NOT_TRIGGERED: "not triggered",
    Outcome.LEFT_TO_NIGHTLY: "left to nightly",
}

#: Outcomes that write no activity and change nothing in CiviCRM: the contact is as the run found it.
UNRECORDED = (Outcome.DEFERRED, Outcome.APPROVAL_REJECTED, Outcome.NOT_TRIGGERED, Outcome.LEFT_TO_NIGHTLY)
#: Outcomes that end the contact's triggering: history, and off its triggers.
SUCCEEDED = frozenset({Outcome.CREATED, Outcome.LINKED_EXISTING, Outcome.ALREADY_LINKED})

# --- reasons for success ----------------------------------------------------------------------

NEW_ACCOUNT = "new account"
EXISTING_ACCOUNT_SAME_EMAIL = "existing account with the same email"


def already_linked(uf_name: str | None, uf_id: object) -> str:
    return (
        f"already linked to CMS account {uf_name} ({uf_id})"
        if uf_name
        else f"already linked to CMS account {uf_id}"
    )


def tried_before(tried: int) -> str:
    return (f"tried {tried} time{'s' if tried != 1 else ''} since its last give-up: the near-real-time run makes "
            "first attempts only, so the nightly run tries again")


# --- reasons for failure found while planning -------------------------------------------------

CONTACT_DECEASED = "contact is deceased"
NO_PRIMARY_EMAIL = "no primary email"


def invalid_email(email: str) -> str:
    return f"invalid email '{email}'"


def email_too_long(max_length: int) -> str:
    return f"email is longer than {max_length} characters, which the CMS cannot store"


def email_shared(email: str, lowest_contact_id: object) -> str:
    return (
        f"email {email} is shared with contact {lowest_contact_id}; give each contact its own primary email"
    )


def account_linked_to_other(username: str, uf_id: object, contact_id: object) -> str:
    return f"CMS account {username} ({uf_id}) is already linked to contact {contact_id}"


def account_is_administrator(username: str, uf_id: object) -> str:
    return f"CMS account {username} ({uf_id}) is an administrator; link it by hand if intended"


def existing_email_not_linked(username: str, uf_id: object) -> str:
    return f"a CMS account with this email exists ({username}, {uf_id}) and on_existing_email is 'fail'"


def email_is_login_of(email: str, contact_id: object) -> str:
    return f"email {email} is already the login name of contact {contact_id}'s CMS link"


def empty_username(pattern: str) -> str:
    return (
        f"username pattern '{pattern}' gives an empty username for this contact; "
        "fill in the name fields or change username_pattern"
    )


def beyond_limit(limit: int) -> str:
    return f"beyond limit {limit}; left for the next run"


# --- reasons found while creating (pipeline.batch) and finalizing -----------------------


def reason_created() -> str:
    return NEW_ACCOUNT


def reason_linked_existing() -> str:
    return EXISTING_ACCOUNT_SAME_EMAIL


def linked_by_earlier_try() -> str:
    return "linked by an earlier try of this run"


def found_after_retry() -> str:
    return "account made by an earlier try of this run, found by its email"


def found_after_doubt() -> str:
    return "account found by its email after an unclear answer from the CMS"


def adopted_from_journal(sent: str | None) -> str:
    when = f" (create sent {sent})" if sent else ""
    return f"account made by an earlier run of this pipeline{when} but never linked; linked now"


def journal_subject(username: str) -> str:
    """Subject of an attempt while its creates are under way (finalize gives it the outcome's)."""
    return f"Creating account {username}"


def cms_rejected(detail: str) -> str:
    return f"the CMS refused the account: {detail}"


def username_rejected(username: str, detail: str) -> str:
    return f"the CMS rejected username '{username}': {detail}"


def username_taken(username: str, tries: int) -> str:
    return (
        f"username {username} and the next candidates were taken {tries} times in a row; "
        "the contact is tried again in the next run"
    )


def duplicate_email_not_found() -> str:
    return (
        "the CMS says this email is already in use, but no account with it can be found; "
        "look for the account in the CMS and link it by hand"
    )


def link_failed(username: str | None, detail: str) -> str:
    account = f"CMS account {username}" if username else "the CMS account"
    return f"{account} exists but CiviCRM refused the link: {detail}"


def cms_error_after_retries(detail: str) -> str:
    return f"the CMS kept failing after retries: {detail}"


def batch_not_finished(batch_label: str | None = None) -> str:
    batch = f"batch {batch_label}" if batch_label else "its batch"
    return f"{batch} did not finish; the contact is tried again in the next run"


def email_locked_elsewhere(wait_seconds: float | None) -> str:
    waited = f" ({wait_seconds:g} s)" if wait_seconds is not None else ""
    return (f"another run or worker was creating an account for this email: its creation lock stayed held for "
            f"longer than lock_wait_seconds{waited} on every try; nothing was sent, and the next run tries again")


MAIL_SENT = "password email sent"
MAIL_SENT_EARLIER = "password email sent earlier (by an earlier try or run)"
MAIL_UNKNOWN = ("a task stopped while sending the password email, so it may not have gone out; "
                "not sent again (a second email would void the first link): ask the CMS to resend if needed")
MAIL_OFF = "no password email: notify is off"
MAIL_DO_NOT_EMAIL = "no password email: the contact has 'do not email' set"


def record_refused(detail: str) -> str:
    return (f"CiviCRM refused to record this contact ({detail}); was it deleted or merged since the run "
            "started? Check the contact, then record the outcome by hand")


def exhausted_earlier(attempts: int) -> str:
    return (f"gave up after {attempts} failed attempts in earlier runs (an earlier run could not finish "
            "taking the contact off its triggers); taken off now, no new attempt")


def mail_in_doubt(detail: str) -> str:
    return (f"the request for the password email broke off ({detail}), so it may not have gone out; not sent "
            "again (a second email would void the first link): ask the CMS to resend if needed")


def mail_failed(detail: str) -> str:
    return f"the account exists but the email to set a password could not be sent: {detail}"


def reset_subject(attempts: int) -> str:
    """Subject of the marker activity written when a contact is taken off its triggers."""
    return f"Gave up after {attempts} failed attempts"


def reset_details(attempts: int) -> str:
    return (
        f"Taken off the trigger groups and tags after {attempts} failed attempts to create a CMS account. "
        "Fix the reason given in the failed attempts, then add the contact to a trigger again: "
        "attempts are counted afresh from here."
    )


# --- activity and audit line ------------------------------------------------------------------


def activity_for(
    outcome: Outcome | str,
    *,
    username: str | None,
    uf_id: object,
    uf_name: str | None,
    reason: str,
    mail_note: str | None = None,
) -> dict[str, str] | None:
    """Status, subject and details of the 'User Account Creation' activity; None when none is due.

    Subjects follow the seed extension (`Created : name (id)`, `Failed to create User name`) so
    reports built on its activities keep working.
    """
    outcome = Outcome(outcome)
    if outcome in UNRECORDED:
        return None
    username, uf_id, uf_name = _plain(username), _plain(uf_id), _plain(uf_name)
    reason, mail_note = _plain(reason), _plain(mail_note)
    if outcome is Outcome.CREATED:
        status, subject = "Completed", f"Created : {username} ({uf_id})"
    elif outcome is Outcome.LINKED_EXISTING:
        status, subject = "Completed", f"Linked : {username} ({uf_id})"
    elif outcome is Outcome.ALREADY_LINKED:
        status, subject = "Completed", f"Already linked : {uf_name} ({uf_id})"
    else:
        status, subject = "Failed", f"Failed to create User {username or ''}".rstrip()
    details = "; ".join(part for part in (reason, mail_note) if part)
    return {"status": status, "subject": subject, "details": details}


def audit_line(
    contact_id: object,
    outcome: Outcome | str,
    *,
    uf_id: object = None,
    attempt: int | None = None,
    max_attempts: int | None = None,
) -> str:
    """One greppable log line per contact: `contact=123 outcome=created uf_id=45`.

    Ids and outcome only: task logs are read by many, and a login is usually the member's name (and
    a reason may quote an email), one line per contact. Logins and reasons are in the activities and
    the run's outcomes file.
    """
    outcome = Outcome(outcome)
    contact_id, uf_id = _plain(contact_id), _plain(uf_id)
    attempt, max_attempts = _plain(attempt), _plain(max_attempts)
    parts = [f"contact={contact_id}", f"outcome={outcome.value}"]
    if uf_id is not None:
        parts.append(f"uf_id={uf_id}")
    if outcome is Outcome.FAILED and attempt is not None:
        parts.append(
            f"attempt={attempt}/{max_attempts}" if max_attempts is not None else f"attempt={attempt}"
        )
    return " ".join(parts)


AUDIT_LINES_PER_RECORD = 200


def audit_records(lines: list[str], per_record: int | None = None) -> list[str]:
    """The audit lines as log records of up to `per_record` lines each (one line per contact still): under
    Airflow every record costs about 0.26 ms on its way to the task log, so 10,000 records took finalize 2.6 s
    (100,000 contacts: 26 s), and 50 records take a few ms."""
    per_record = per_record or AUDIT_LINES_PER_RECORD
    return ["\n".join(lines[start:start + per_record]) for start in range(0, len(lines), per_record)]


def _plain(value: Any) -> Any:
    """None for missing values (None, NaN, pandas NA); whole floats as ints (ids from float columns)."""
    if value is None:
        return None
    if isinstance(value, float) or type(value).__module__ == "numpy":
        number = value.item() if hasattr(value, "item") else value
        if isinstance(number, float):
            return None if math.isnan(number) else int(number) if number.is_integer() else number
        return number
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


# --- password resets ----------------------------------------------------------------------------
# Subjects as the seed extension wrote them, so reports built on its activities keep working.


def password_reset_subject(status: str, uf_id: object) -> str:
    """The activity's subject for its status (Completed, Scheduled, Failed)."""
    uf_id = _plain(uf_id)
    if status == "Completed":
        return f"Password Reset email send to uid : ({uf_id})"
    if status == "Scheduled":
        return f"Password reset email due to User uid : {uf_id}"
    return f"Failed to send Password reset email to User uid : {uf_id}" if uf_id else \
        "Failed to send Password reset email"


RESET_SENT = "the CMS sent its password-reset email"
RESET_SENDING = "asking the CMS for the password-reset email"


def reset_no_account(domain_id: int) -> str:
    return (f"no CMS account is linked to this contact (domain {domain_id}), so there is no password to "
            "reset; give the contact an account first (a trigger group or tag)")


def reset_account_gone(uf_id: object) -> str:
    return (f"the linked CMS account {_plain(uf_id)} no longer exists in the CMS; check the contact's "
            "CMS user link (UFMatch)")


def reset_refused(detail: str) -> str:
    return f"the CMS did not send the password-reset email: {detail}"


def reset_in_doubt(detail: str) -> str:
    return (f"the request for the password-reset email broke off ({detail}), so it may have gone out; not "
            "sent again (a second email would void the first link): add the contact to the reset group or "
            "tag again to send another")


RESET_STOPPED = ("a task stopped while asking for the password-reset email, so it may have gone out; not "
                 "sent again (a second email would void the first link): add the contact to the reset group "
                 "or tag again to send another")


def reset_deferred(detail: str) -> str:
    return f"the CMS could not be asked ({detail}); the contact stays in its reset group or tag for the next run"


# --- the approval gate --------------------------------------------------------------------------


def approval_rejected(decision: str, by: str | None, timeout_minutes: int | None, planned: str) -> str:
    """Reason of a contact whose run was rejected at the approval gate; `planned`: what the plan said."""
    if decision == ApprovalDecision.TIMED_OUT:
        why = (f"nobody answered the approval request within {timeout_minutes} minutes "
               "(approval_timeout_minutes), so it was rejected")
    else:
        why = f"the approval request was rejected by {by}" if by else "the approval request was rejected"
    return f"{why}; nothing was done and no attempt counted (planned: {planned}); the next run plans it again"

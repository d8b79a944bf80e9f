"""Outcome names, every reason text, the activity written per attempt, and the audit log line.

Reasons live here (and only here) so the plan, the batch and finalize word things the same way.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    CREATED = "created"
    LINKED_EXISTING = "linked_existing"
    ALREADY_LINKED = "already_linked"
    FAILED = "failed"
    DEFERRED = "deferred"


#: The order outcomes are listed in summaries.
OUTCOME_ORDER: tuple[Outcome, ...] = tuple(Outcome)

# --- reasons for success ----------------------------------------------------------------------

NEW_ACCOUNT = "new account"
EXISTING_ACCOUNT_SAME_EMAIL = "existing account with the same email"


def already_linked(uf_name: str, uf_id: object) -> str:
    return f"already linked to CMS account {uf_name} ({uf_id})"


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


# --- reasons for failure found while creating -------------------------------------------------


def cms_error_after_retries(detail: str) -> str:
    return f"the CMS kept failing after retries: {detail}"


def username_rejected(username: str, detail: str) -> str:
    return f"the CMS rejected username '{username}': {detail}"


def batch_not_finished(batch_label: str) -> str:
    return f"batch {batch_label} did not finish; the contact is tried again in the next run"


def mail_failed(detail: str) -> str:
    return f"the account exists but the email to set a password could not be sent: {detail}"


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
    if outcome is Outcome.DEFERRED:
        return None
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
    username: str | None = None,
    attempt: int | None = None,
    max_attempts: int | None = None,
    reason: str | None = None,
) -> str:
    """One greppable log line per contact: `contact=123 outcome=created uf_id=45 username=jane.doe`."""
    outcome = Outcome(outcome)
    parts = [f"contact={contact_id}", f"outcome={outcome.value}"]
    if uf_id is not None:
        parts.append(f"uf_id={uf_id}")
    if username:
        parts.append(f"username={_quote(username) if _needs_quotes(username) else username}")
    if outcome is Outcome.FAILED and attempt is not None:
        parts.append(
            f"attempt={attempt}/{max_attempts}" if max_attempts is not None else f"attempt={attempt}"
        )
    if reason:
        parts.append(f"reason={_quote(reason)}")
    return " ".join(parts)


def _needs_quotes(text: str) -> bool:
    return not text or any(char.isspace() or char in "\"'=\\" for char in text)


def _quote(text: str) -> str:
    # Escaped so one contact stays one line, and fields stay splittable on spaces.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'

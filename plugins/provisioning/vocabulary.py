"""The project's names, defined once: outcomes, planned actions, trigger sources, existing-email policy.

Everything else imports these; no module retypes them as string literals. Their values are the
documented interface (the README's outcome table, XComs, the audit line), so they never change.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a contact's run ended; exactly one per triggered contact."""

    CREATED = "created"
    LINKED_EXISTING = "linked_existing"
    ALREADY_LINKED = "already_linked"
    FAILED = "failed"
    DEFERRED = "deferred"
    APPROVAL_REJECTED = "approval_rejected"  # the approval gate said no (or timed out): like deferred
    # the near-real-time run only: an id it was given that is in no trigger group or tag (no activity)
    NOT_TRIGGERED = "not_triggered"
    # the near-real-time run only: tried since its last give-up, so the nightly run tries again (no activity)
    LEFT_TO_NIGHTLY = "left_to_nightly"


class ApprovalDecision(StrEnum):
    """What the approval gate decided for a run (its XCom `decision`)."""

    NOT_NEEDED = "not_needed"  # no approval_threshold, a dry run, or not more creates than it
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"    # nobody answered within approval_timeout_minutes: Airflow's default, Reject


class ResetOutcome(StrEnum):
    """How a contact in a reset group or tag ended its run; exactly one per such contact."""

    SENT = "reset_sent"          # the CMS sent its password-reset email; taken off
    FAILED = "reset_failed"      # no linked account, or the CMS refused or may not have sent it; taken off
    DEFERRED = "reset_deferred"  # the CMS could not be asked (unavailable); stays for the next run


class Action(StrEnum):
    """What the plan gives a batch to do for a contact (NONE: the plan settled it)."""

    CREATE = "create"
    LINK = "link"
    NONE = "none"


#: The actions a create batch carries out.
BATCH_ACTIONS: tuple[Action, ...] = (Action.CREATE, Action.LINK)


class OnExistingEmail(StrEnum):
    """The `on_existing_email` setting: link a CMS account that has the contact's email, or fail."""

    LINK = "link"
    FAIL = "fail"


class Source(StrEnum):
    """Why a contact is in a run: the kind of trigger it came from. Tagged as `<kind>:<id>`."""

    GROUP = "group"   # a static trigger group (or one of its static child groups)
    SMART = "smart"   # a smart trigger group's cached members
    TAG = "tag"       # a trigger tag


def source_tag(kind: Source, entity_id: int) -> str:
    return f"{kind}:{int(entity_id)}"


def parse_source(tag: str) -> tuple[Source, int]:
    """`smart:12` -> (Source.SMART, 12); ValueError for anything else."""
    kind, _, number = str(tag).partition(":")
    return Source(kind), int(number)

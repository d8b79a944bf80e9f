"""Where a run's contacts come from: a contact source.

The nightly run takes every contact in a trigger group or with a trigger tag. Other DAGs give
another source (given contact ids, recent changes) to the same steps. A source is described by a
JSON-safe dict, so a DAG file can pass it to a task as it is.
"""

from __future__ import annotations

from civicrm_hooks import queries

TRIGGER_MEMBERSHIP = "trigger_membership"


def trigger_membership() -> dict:
    """Every contact in a trigger group (static, smart, child) or with a trigger tag."""
    return {"kind": TRIGGER_MEMBERSHIP}


def members(source: dict, civicrm, triggers: queries.Triggers, domain_id: int) -> dict[int, list[str]]:
    """The source's contacts: contact id -> the triggers it came from (as queries.triggered_members says)."""
    kind = (source or {}).get("kind")
    if kind == TRIGGER_MEMBERSHIP:
        return queries.triggered_members(civicrm, triggers, domain_id)
    raise ValueError(f"unknown contact source {kind!r}; known: {TRIGGER_MEMBERSHIP}")

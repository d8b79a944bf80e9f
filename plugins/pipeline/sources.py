"""Where a run's contacts come from: a contact source.

The nightly run takes every contact in a trigger group or with a trigger tag. The near-real-time
run takes the contacts it is told about: those the watcher saw join a trigger group or get a
trigger tag (the id spans of its asset events), and ids given in the run's `conf`; of those, only
the ones still in a trigger count, and it makes first attempts only. A source is described by a
JSON-safe dict, so a DAG file can pass it to a task as it is; the task adds what the run was told.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from civicrm_hooks import queries

TRIGGER_MEMBERSHIP = "trigger_membership"
REQUESTED = "requested"


def trigger_membership() -> dict:
    """Every contact in a trigger group (static, smart, child) or with a trigger tag."""
    return {"kind": TRIGGER_MEMBERSHIP}


def requested() -> dict:
    """The contacts a run is told about; the task fills in `contact_ids` and `spans` (`told`, from `tasks.told_in`)."""
    return {"kind": REQUESTED}


def told(source: dict, *, contact_ids=(), spans: dict[str, list[list[int]]] | None = None) -> dict:
    """A requested source with what the run was told: ids (conf) and SubscriptionHistory / EntityTag id spans."""
    return {**source, "contact_ids": sorted({int(c) for c in contact_ids}), "spans": spans or {}}


@dataclass
class Found:
    members: dict[int, list[str]]  # contact id -> the triggers it came from (queries.triggered_members)
    not_triggered: dict[int, str] = field(default_factory=dict)  # asked-for ids in no trigger -> why
    first_attempts_only: bool = False


def members(source: dict, civicrm, triggers: queries.Triggers, domain_id: int) -> Found:
    """The source's contacts."""
    kind = (source or {}).get("kind")
    if kind == TRIGGER_MEMBERSHIP:
        return Found(queries.triggered_members(civicrm, triggers, domain_id))
    if kind == REQUESTED:
        asked = set(source.get("contact_ids") or ()) | queries.joined_contacts(civicrm, source.get("spans") or {},
                                                                               triggers)
        found = queries.triggered_members(civicrm, triggers, domain_id, contact_ids=asked) if asked else {}
        return Found(found, queries.not_triggered(civicrm, asked - set(found)), first_attempts_only=True)
    raise ValueError(f"unknown contact source {kind!r}; known: {TRIGGER_MEMBERSHIP}, {REQUESTED}")

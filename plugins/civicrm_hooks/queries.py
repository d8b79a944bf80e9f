"""The CiviCRM side of a run: resolving triggers, extracting contacts, and the batched writes.

Every function takes a `CiviCRMHook` (or anything with its `call` / `get_all` / `get_in`
methods). Reads are keyset-paged or chunked `IN` queries, writes are `save` with `records`, or
`update` / `delete` by `where`, so the number of calls grows with pages and chunks, never with
contacts one by one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

ACTIVITY_TYPE = "User Account Creation"
FAILED_STATUS = "Failed"
# Written when the pipeline takes a contact off its triggers; attempts are counted after it.
RESET_STATUS = "Cancelled"
WRITE_CHUNK = 200

# Entities the pipeline reads; pre-flight probes each so a missing permission is named up front.
READ_ENTITIES = ("Contact", "Email", "Group", "GroupContact", "Tag", "EntityTag", "UFMatch",
                 "Activity", "ActivityContact", "OptionValue")


def run_marker(dag_id: str, run_id: str) -> str:
    """The line every activity of one Airflow run carries in its details."""
    return f"[Airflow run {dag_id} / {run_id}]"  # bracketed: no run id can match as a prefix of another


class TriggerError(ValueError):
    """A group or tag named in the settings matches nothing, or more than one record."""


@dataclass(frozen=True)
class Triggers:
    """Settings' group and tag entries resolved to ids (and titles, for logs)."""

    static_groups: dict[int, str] = field(default_factory=dict)
    smart_groups: dict[int, str] = field(default_factory=dict)
    tags: dict[int, str] = field(default_factory=dict)
    history_group: int | None = None
    history_tag: int | None = None
    # Static descendants of the static trigger groups: the `groups` filter counts their members
    # as trigger-group members, so taking a contact off its triggers must reach them too.
    child_groups: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "child_groups": {str(k): v for k, v in self.child_groups.items()},
            "static_groups": {str(k): v for k, v in self.static_groups.items()},
            "smart_groups": {str(k): v for k, v in self.smart_groups.items()},
            "tags": {str(k): v for k, v in self.tags.items()},
            "history_group": self.history_group,
            "history_tag": self.history_tag,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Triggers:
        return cls(
            static_groups={int(k): v for k, v in data["static_groups"].items()},
            smart_groups={int(k): v for k, v in data["smart_groups"].items()},
            tags={int(k): v for k, v in data["tags"].items()},
            history_group=data.get("history_group"),
            history_tag=data.get("history_tag"),
            child_groups={int(k): v for k, v in data.get("child_groups", {}).items()},
        )

    @property
    def all_groups(self) -> list[int]:
        return [*self.static_groups, *self.smart_groups]


# --- resolving settings entries -------------------------------------------------------------


def _match_entry(entry: int | str, rows: list[dict], text_fields: tuple[str, ...], setting: str,
                 kind: str) -> dict:
    if isinstance(entry, int) or (isinstance(entry, str) and entry.isdigit()):
        found = [r for r in rows if r["id"] == int(entry)]
    else:
        found = [r for r in rows if any(r.get(f) == entry for f in text_fields)]
        if not found:  # names are case-insensitive in MySQL; let a case slip through, but only uniquely
            found = [r for r in rows if any(str(r.get(f) or "").lower() == entry.lower() for f in text_fields)]
    if not found:
        raise TriggerError(f"{setting}: no {kind} has the id, {' or '.join(text_fields)} {entry!r} in CiviCRM. "
                           f"Check the spelling in the settings file, or create the {kind}.")
    ids = {r["id"] for r in found}
    if len(ids) > 1:
        raise TriggerError(f"{setting}: {entry!r} matches {len(ids)} {kind}s (ids {sorted(ids)}). "
                           f"Use the {kind}'s id or its unique name instead.")
    return found[0]


def _lookup(hook, entity: str, entries: list, text_fields: tuple[str, ...], select: list[str]) -> list[dict]:
    ids = [int(e) for e in entries if isinstance(e, int) or (isinstance(e, str) and e.isdigit())]
    texts = [e for e in entries if isinstance(e, str) and not e.isdigit()]
    clauses = []
    if ids:
        clauses.append(["id", "IN", ids])
    for f in text_fields:
        if texts:
            clauses.append([f, "IN", texts])
    if not clauses:
        return []
    rows = hook.call(entity, "get", {"select": select, "where": [["OR", clauses]], "limit": 0})
    missing = [t for t in texts if not any(str(r.get(f) or "").lower() == t.lower()
                                           for r in rows for f in text_fields)]
    if missing:  # a case-insensitive second look, as MySQL collations would give
        more = hook.call(entity, "get", {"select": select, "limit": 0})
        rows += [r for r in more if r not in rows and any(
            str(r.get(f) or "").lower() == t.lower() for t in missing for f in text_fields)]
    return rows


def resolve_triggers(hook, settings) -> Triggers:
    """Resolve trigger and history groups/tags from ids, names or titles; one or two calls each."""
    group_entries = list(settings.trigger_groups) + [g for g in [settings.history_group] if g is not None]
    tag_entries = list(settings.trigger_tags) + [t for t in [settings.history_tag] if t is not None]
    groups = _lookup(hook, "Group", group_entries, ("name", "title"),
                     ["id", "name", "title", "saved_search_id", "is_active", "children"])
    tags = _lookup(hook, "Tag", tag_entries, ("name", "label"), ["id", "name", "label"])

    static, smart = {}, {}
    for entry in settings.trigger_groups:
        group = _match_entry(entry, groups, ("name", "title"), "trigger_groups", "group")
        if not group.get("is_active", True):
            raise TriggerError(f"trigger_groups: group {group['title']!r} ({group['id']}) is disabled in "
                               "CiviCRM. Enable it or remove it from the settings.")
        (smart if group.get("saved_search_id") else static)[group["id"]] = group["title"]
    trigger_tags = {}
    for entry in settings.trigger_tags:
        tag = _match_entry(entry, tags, ("name", "label"), "trigger_tags", "tag")
        trigger_tags[tag["id"]] = tag.get("label") or tag["name"]
    history_group = history_tag = None
    if settings.history_group is not None:
        group = _match_entry(settings.history_group, groups, ("name", "title"), "history_group", "group")
        if group.get("saved_search_id"):
            raise TriggerError(f"history_group: {group['title']!r} is a smart group; contacts cannot be "
                               "added to it. Choose a regular group.")
        history_group = group["id"]
    if settings.history_tag is not None:
        history_tag = _match_entry(settings.history_tag, tags, ("name", "label"), "history_tag", "tag")["id"]
    return Triggers(static, smart, trigger_tags, history_group, history_tag,
                    _static_descendants(hook, [g for g in groups if g["id"] in static]))


def _static_descendants(hook, parents: list[dict]) -> dict[int, str]:
    """Child groups, grandchildren and so on (one call per level), smart ones left out."""
    found: dict[int, str] = {}
    seen = {g["id"] for g in parents}
    todo = {int(c) for g in parents for c in (g.get("children") or [])} - seen
    while todo:
        rows = hook.call("Group", "get", {"select": ["id", "title", "saved_search_id", "children"],
                                          "where": [["id", "IN", sorted(todo)]], "limit": 0})
        seen |= todo
        found.update({r["id"]: r["title"] for r in rows if not r.get("saved_search_id")})
        todo = {int(c) for r in rows for c in (r.get("children") or [])} - seen
    return found


def probe_read_permissions(hook) -> None:
    """One cheap read per entity, so a missing permission fails pre-flight with the entity's name."""
    for entity in READ_ENTITIES:
        hook.call(entity, "get", {"select": ["id"], "limit": 1})


def ensure_option_values(hook, *, create: bool) -> list[str]:
    """The activity type and the "Failed" status exist (core has no "Failed"); create them when allowed.

    Returns what is missing (when `create` is false) or what was created.
    """
    wanted = [("activity_type", ACTIVITY_TYPE, "CMS user account created."),
              ("activity_status", FAILED_STATUS, "Activity failed.")]
    rows = hook.call("OptionValue", "get", {
        "select": ["id", "name", "option_group_id:name"],
        "where": [["OR", [["AND", [["option_group_id:name", "=", g], ["name", "=", n]]] for g, n, _ in wanted]]],
        "limit": 0,
    })
    have = {(r["option_group_id:name"], r["name"]) for r in rows}
    missing = [(g, n, d) for g, n, d in wanted if (g, n) not in have]
    if missing and create:
        hook.call("OptionValue", "save", {
            "records": [{"option_group_id:name": g, "name": n, "label": n, "description": d, "is_active": True}
                        for g, n, d in missing],
            "match": ["option_group_id", "name"],
        })
    return [f"{g}:{n}" for g, n, _ in missing]


# --- extract -------------------------------------------------------------------------------


def triggered_members(hook, triggers: Triggers, domain_id: int) -> dict[int, list[str]]:
    """Contact id -> the triggers it came from (`group:5`, `smart:7`, `tag:3`).

    Groups go through Contact's `groups` filter, which follows CiviCRM's own rules: static
    members with status Added, smart-group cache members, child groups, trashed contacts left
    out. Linked members of smart groups are left out too: a smart group cannot be left, so a
    linked member there is simply done.
    """
    sources: dict[int, list[str]] = defaultdict(list)
    for group_id in triggers.static_groups:
        for row in hook.get_all("Contact", {"select": ["id"], "where": [["groups", "IN", [group_id]]]}):
            sources[row["id"]].append(f"group:{group_id}")
    for group_id in triggers.smart_groups:
        params = {
            "select": ["id"],
            "where": [["groups", "IN", [group_id]]],
            "join": [["UFMatch AS uf", "EXCLUDE", ["uf.contact_id", "=", "id"], ["uf.domain_id", "=", domain_id]]],
        }
        for row in hook.get_all("Contact", params):
            sources[row["id"]].append(f"smart:{group_id}")
    if triggers.tags:
        params = {
            "select": ["entity_id", "tag_id"],
            "where": [["entity_table", "=", "civicrm_contact"], ["tag_id", "IN", list(triggers.tags)]],
        }
        for row in hook.get_all("EntityTag", params):
            sources[row["entity_id"]].append(f"tag:{row['tag_id']}")
    return dict(sources)


CONTACT_SELECT = ["id", "contact_type", "first_name", "last_name", "display_name", "is_deceased",
                  "do_not_email", "preferred_language", "email.email", "uf.uf_id", "uf.uf_name"]


def contact_details(hook, contact_ids: Iterable[int], domain_id: int) -> list[dict]:
    """Names, primary email and this domain's UFMatch of each contact; trashed contacts dropped."""
    params = {
        "select": CONTACT_SELECT,
        # `id IN` lifts the default is_deleted filter, so the trash is excluded explicitly
        "where": [["is_deleted", "=", False]],
        "join": [
            ["Email AS email", "LEFT", ["email.contact_id", "=", "id"], ["email.is_primary", "=", True]],
            ["UFMatch AS uf", "LEFT", ["uf.contact_id", "=", "id"], ["uf.domain_id", "=", domain_id]],
        ],
    }
    rows = []
    for row in hook.get_in("Contact", "id", sorted(contact_ids), params):
        rows.append({
            "contact_id": row["id"],
            "contact_type": row.get("contact_type"),
            "first_name": row.get("first_name") or "",
            "last_name": row.get("last_name") or "",
            "display_name": row.get("display_name") or "",
            "email": row.get("email.email"),
            "is_deceased": bool(row.get("is_deceased")),
            "do_not_email": bool(row.get("do_not_email")),
            "preferred_language": row.get("preferred_language"),
            "uf_id": row.get("uf.uf_id"),
            "uf_name": row.get("uf.uf_name"),
        })
    return rows


def attempt_history(hook, contact_ids: Iterable[int], run_marker: str) -> dict[int, int]:
    """Failed "User Account Creation" activities per contact since its last reset marker.

    This run's own activities (a re-run of the same run) are not counted: attempts are runs.
    """
    params = {
        "select": ["contact_id", "activity_id", "activity_id.status_id:name", "activity_id.details"],
        "where": [["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", ACTIVITY_TYPE]],
    }
    history: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for row in hook.get_in("ActivityContact", "contact_id", sorted(contact_ids), params):
        if run_marker in (row.get("activity_id.details") or ""):
            continue
        history[row["contact_id"]].append((row["activity_id"], row.get("activity_id.status_id:name")))
    attempts = {}
    for contact_id, rows in history.items():
        rows.sort()
        resets = [i for i, (_, status) in enumerate(rows) if status == RESET_STATUS]
        since = rows[resets[-1] + 1:] if resets else rows
        attempts[contact_id] = sum(1 for _, status in since if status == FAILED_STATUS)
    return attempts


def links_for(hook, domain_id: int, *, uf_ids: Iterable[int] = (), uf_names: Iterable[str] = ()) -> list[dict]:
    """UFMatch rows in this domain that point at the given CMS users or login names."""
    select = {"select": ["contact_id", "uf_id", "uf_name"], "where": [["domain_id", "=", domain_id]]}
    rows = {}
    for row in hook.get_in("UFMatch", "uf_id", sorted(set(uf_ids)), select):
        rows[row["id"]] = row
    for row in hook.get_in("UFMatch", "uf_name", sorted(set(uf_names)), select):
        rows[row["id"]] = row
    return [{"contact_id": r["contact_id"], "uf_id": r["uf_id"], "uf_name": r["uf_name"]} for r in rows.values()]


def linked_accounts(hook, contact_ids: Iterable[int], domain_id: int) -> dict[int, dict]:
    """Contact id -> its UFMatch row in this domain, for the contacts that have one."""
    params = {"select": ["contact_id", "uf_id", "uf_name"], "where": [["domain_id", "=", domain_id]]}
    return {r["contact_id"]: r for r in hook.get_in("UFMatch", "contact_id", sorted(set(contact_ids)), params)}


# --- writes ----------------------------------------------------------------------------------


def save_links(hook, links: list[dict], domain_id: int) -> dict[int, str]:
    """Write UFMatch rows (contact_id, uf_id, uf_name) in one call; returns contact id -> error.

    `save` is not atomic, so when the batch call fails the rows are saved one by one to find
    the one at fault; the others still land. Matching on (contact_id, domain_id) makes a
    repeat after a crash harmless.
    """
    if not links:
        return {}
    records = [{"contact_id": r["contact_id"], "uf_id": r["uf_id"], "uf_name": r["uf_name"],
                "domain_id": domain_id} for r in links]
    params = {"records": records, "match": ["contact_id", "domain_id"]}
    from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMError, CiviCRMUnavailable

    try:
        hook.call("UFMatch", "save", params)
        return {}
    except (CiviCRMAuthError, CiviCRMUnavailable):
        raise
    except CiviCRMError:
        pass
    errors = {}
    for record in records:
        try:
            hook.call("UFMatch", "save", {"records": [record], "match": ["contact_id", "domain_id"]})
        except (CiviCRMAuthError, CiviCRMUnavailable):
            raise
        except CiviCRMError as exc:
            errors[record["contact_id"]] = f"CiviCRM refused the UFMatch link: {exc.message}"
    return errors


def activities_written(hook, contact_ids: Iterable[int], run_marker: str) -> set[tuple[int, str]]:
    """(contact id, status) of this run's activities already in CiviCRM, so finalize writes each once."""
    params = {
        "select": ["contact_id", "activity_id.status_id:name"],
        "where": [["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", ACTIVITY_TYPE],
                  ["activity_id.details", "LIKE", f"%{run_marker}%"]],
    }
    return {(r["contact_id"], r["activity_id.status_id:name"])
            for r in hook.get_in("ActivityContact", "contact_id", sorted(set(contact_ids)), params)}


def write_activities(hook, activities: list[dict]) -> int:
    """Create activities in chunks of `save` records; returns how many were written."""
    for start in range(0, len(activities), WRITE_CHUNK):
        chunk = activities[start:start + WRITE_CHUNK]
        hook.call("Activity", "save", {"records": chunk})
    return len(activities)


def add_to_history(hook, triggers: Triggers, contact_ids: list[int]) -> None:
    """History group membership (Added) and history tag, idempotently."""
    for start in range(0, len(contact_ids), WRITE_CHUNK):
        chunk = contact_ids[start:start + WRITE_CHUNK]
        if triggers.history_group:
            hook.call("GroupContact", "save", {
                "records": [{"contact_id": c, "group_id": triggers.history_group, "status": "Added"} for c in chunk],
                "match": ["contact_id", "group_id"],
            })
        if triggers.history_tag:
            hook.call("EntityTag", "save", {
                "records": [{"entity_table": "civicrm_contact", "entity_id": c, "tag_id": triggers.history_tag}
                            for c in chunk],
                "match": ["entity_table", "entity_id", "tag_id"],
            })


def take_off_triggers(hook, triggers: Triggers, contact_ids: list[int],
                      smart_opt_outs: Iterable[tuple[int, int]] = ()) -> None:
    """Trigger group memberships to Removed (kept as history, not deleted); trigger tags deleted.

    `smart_opt_outs` are (contact id, smart group id) pairs that get a Removed row: the only way
    to stop a smart group from offering a contact again (used after the last failed attempt).
    """
    for start in range(0, len(contact_ids), WRITE_CHUNK):
        chunk = contact_ids[start:start + WRITE_CHUNK]
        if triggers.static_groups:
            hook.call("GroupContact", "update", {
                "values": {"status": "Removed"},
                "where": [["group_id", "IN", [*triggers.static_groups, *triggers.child_groups]],
                          ["contact_id", "IN", chunk],
                          ["status", "=", "Added"]],
            })
        if triggers.tags:
            hook.call("EntityTag", "delete", {
                "where": [["entity_table", "=", "civicrm_contact"], ["tag_id", "IN", list(triggers.tags)],
                          ["entity_id", "IN", chunk]],
            })
    pairs = sorted(set(smart_opt_outs))
    for start in range(0, len(pairs), WRITE_CHUNK):
        hook.call("GroupContact", "save", {
            "records": [{"contact_id": c, "group_id": g, "status": "Removed"} for c, g in pairs[start:start + WRITE_CHUNK]],
            "match": ["contact_id", "group_id"],
        })

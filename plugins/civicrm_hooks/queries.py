"""The CiviCRM side of a run: resolving triggers, extracting contacts, and the batched writes.

Every function takes a `CiviCRMHook` (or anything with its `call` / `get_all` / `get_in`
methods). Reads are keyset-paged or chunked `IN` queries, writes are `save` with `records`, or
`update` / `delete` by `where`, so the number of calls grows with pages and chunks, never with
contacts one by one.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from provisioning import journal
from provisioning.journal import JournalEntry
from provisioning.vocabulary import Source, source_tag

ACTIVITY_TYPE = "User Account Creation"
# its own type, so a reset never counts as an account-creation attempt
PASSWORD_RESET_TYPE = "User Account Password Reset"
FAILED_STATUS = "Failed"
# Written when the pipeline takes a contact off its triggers; attempts are counted after it.
RESET_STATUS = "Cancelled"
# An attempt whose creates are under way: the account journal lives in it (provisioning.journal).
JOURNAL_STATUS = "Scheduled"
WRITE_CHUNK = 200

# Entities the pipeline reads; pre-flight probes each so a missing permission is named up front.
READ_ENTITIES = ("Contact", "Email", "Group", "GroupContact", "Tag", "EntityTag", "UFMatch",
                 "Activity", "ActivityContact", "OptionValue")


def run_marker(dag_id: str, run_id: str) -> str:
    """The line every activity of one Airflow run carries in its details."""
    return f"[Airflow run {dag_id} / {run_id}]"  # bracketed: no run id can match as a prefix of another


class TriggerError(ValueError):
    """Groups or tags named in the settings match nothing, or more than one record (all of them listed)."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


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
    return _resolve(hook, settings.trigger_groups, settings.trigger_tags, ("trigger_groups", "trigger_tags"),
                    history_group=settings.history_group, history_tag=settings.history_tag)


def resolve_resets(hook, settings) -> Triggers:
    """The password-reset groups and tags (`reset_groups`, `reset_tags`) resolved the same way."""
    return _resolve(hook, settings.reset_groups, settings.reset_tags, ("reset_groups", "reset_tags"))


def _resolve(hook, group_refs: list, tag_refs: list, names: tuple[str, str], *,
             history_group=None, history_tag=None) -> Triggers:
    group_setting, tag_setting = names
    group_entries = list(group_refs) + [g for g in [history_group] if g is not None]
    tag_entries = list(tag_refs) + [t for t in [history_tag] if t is not None]
    groups = _lookup(hook, "Group", group_entries, ("name", "title"),
                     ["id", "name", "title", "saved_search_id", "is_active", "children"])
    tags = _lookup(hook, "Tag", tag_entries, ("name", "label"), ["id", "name", "label"])

    problems: list[str] = []

    def match(entry, rows, fields, setting, kind):
        try:
            return _match_entry(entry, rows, fields, setting, kind)
        except TriggerError as exc:
            problems.append(str(exc))
            return None

    static, smart = {}, {}
    for entry in group_refs:
        group = match(entry, groups, ("name", "title"), group_setting, "group")
        if group is None:
            continue
        if not group.get("is_active", True):
            problems.append(f"{group_setting}: group {group['title']!r} ({group['id']}) is disabled in "
                            "CiviCRM. Enable it or remove it from the settings.")
            continue
        (smart if group.get("saved_search_id") else static)[group["id"]] = group["title"]
    found_tags = {}
    for entry in tag_refs:
        tag = match(entry, tags, ("name", "label"), tag_setting, "tag")
        if tag is not None:
            found_tags[tag["id"]] = tag.get("label") or tag["name"]
    history_group_id = history_tag_id = None
    if history_group is not None:
        group = match(history_group, groups, ("name", "title"), "history_group", "group")
        if group is not None and group.get("saved_search_id"):
            problems.append(f"history_group: {group['title']!r} is a smart group; contacts cannot be "
                            "added to it. Choose a regular group.")
        elif group is not None:
            history_group_id = group["id"]
    if history_tag is not None:
        tag = match(history_tag, tags, ("name", "label"), "history_tag", "tag")
        history_tag_id = tag["id"] if tag is not None else None
    if problems:
        raise TriggerError(problems)
    return Triggers(static, smart, found_tags, history_group_id, history_tag_id,
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


def missing_permissions(hook) -> list[str]:
    """Which of the CiviCRM permissions the pipeline needs the API contact lacks, one text each.

    Asked without writing anything: `checkAccess` says whether a write would be allowed, and a
    read that the permission guards shows the rest. (A missing 'authenticate with api key' is the
    401 of the first call.) 'view all contacts' and 'access CiviCRM' are implied by 'edit all
    contacts' and 'administer CiviCRM'.
    """
    from civicrm_hooks.hook import CiviCRMAuthError

    problems = []
    try:
        hook.call("UFMatch", "get", {"select": ["id"], "limit": 1})
    except CiviCRMAuthError as exc:
        if exc.status != 403:
            raise
        problems.append("the API contact lacks the CiviCRM permission 'administer CiviCRM' (needed for UFMatch, "
                        "the links between contacts and CMS accounts, and to create the activity options)")
    me = hook.call("Contact", "get", {"select": ["id"], "where": [["id", "=", "user_contact_id"]], "limit": 1})
    other = hook.call("Contact", "get", {"select": ["id"], "where": [["id", "!=", "user_contact_id"]], "limit": 1})
    someone = (other or me or [{"id": 0}])[0]["id"]
    edits = bool(other) and hook.call("Contact", "checkAccess", {"action": "update",
                                                                 "values": {"id": someone}})[0]["access"]
    if not edits:
        problems.append("the API contact lacks the CiviCRM permission 'edit all contacts' (needed to read "
                        "contacts and emails and to change group memberships and tags; it implies "
                        "'view all contacts')")
    source = me[0]["id"] if me else someone
    activities = hook.call("Activity", "checkAccess", {"action": "create", "values": {
        "activity_type_id": 1, "source_contact_id": source, "target_contact_id": [someone]}})[0]["access"]
    if not activities:
        problems.append("the API contact lacks the CiviCRM permission 'view all activities' (needed to read "
                        "and write the 'User Account Creation' activities)")
    return problems


def probe_read_permissions(hook) -> None:
    """One cheap read per entity, so a missing permission fails pre-flight with the entity's name."""
    for entity in READ_ENTITIES:
        hook.call(entity, "get", {"select": ["id"], "limit": 1})


def ensure_option_values(hook, *, create: bool) -> list[str]:
    """The activity type and the "Failed" status exist (core has no "Failed"); create them when allowed.

    Returns what is missing (when `create` is false) or what was created.
    """
    wanted = [("activity_type", ACTIVITY_TYPE, "CMS user account created."),
              ("activity_type", PASSWORD_RESET_TYPE, "Sent a password reset email."),
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


def triggered_members(hook, triggers: Triggers, domain_id: int,
                      contact_ids: Iterable[int] | None = None) -> Members:
    """Contact id -> the triggers it came from (`group:5`, `smart:7`, `tag:3`); only among
    `contact_ids` when given (the near-real-time run's contacts).

    Groups go through Contact's `groups` filter, which follows CiviCRM's own rules: static
    members with status Added, smart-group cache members, child groups, trashed contacts left
    out. Linked members of smart groups are left out too: a smart group cannot be left, so a
    linked member there is simply done.
    """
    def rows(entity: str, field_: str, params: dict):
        if contact_ids is None:
            return hook.get_all(entity, params)
        return hook.get_in(entity, field_, sorted(set(contact_ids)), params)

    # A run may have a million members but only a few distinct lists of triggers: the pairs (contact, trigger)
    # are gathered in arrays, and the answer holds an id and a number per contact (Members), not a dict entry,
    # an int object and a list.
    tags: dict[str, int] = {}
    ids, which = array("q"), array("i")

    def add(contact_id: int, tag: str) -> None:
        ids.append(contact_id)
        which.append(tags.setdefault(tag, len(tags)))

    for group_id in triggers.static_groups:
        tag = source_tag(Source.GROUP, group_id)
        for row in rows("Contact", "id", {"select": ["id"], "where": [["groups", "IN", [group_id]]]}):
            add(row["id"], tag)
    for group_id in triggers.smart_groups:
        tag = source_tag(Source.SMART, group_id)
        params = {
            "select": ["id"],
            "where": [["groups", "IN", [group_id]]],
            "join": [["UFMatch AS uf", "EXCLUDE", ["uf.contact_id", "=", "id"], ["uf.domain_id", "=", domain_id]]],
        }
        for row in rows("Contact", "id", params):
            add(row["id"], tag)
    if triggers.tags:
        params = {
            "select": ["entity_id", "tag_id"],
            "where": [["entity_table", "=", "civicrm_contact"], ["tag_id", "IN", list(triggers.tags)]],
        }
        for row in rows("EntityTag", "entity_id", params):
            add(row["entity_id"], source_tag(Source.TAG, row["tag_id"]))
    return Members.of(ids, which, list(tags))


class Members(Mapping):
    """Contact id -> the triggers it came from (a list, shared by the contacts with the same triggers: read
    only), for up to millions of contacts: sorted ids and one number per contact (numpy arrays)."""

    def __init__(self, ids, codes, lists: list[list[str]]) -> None:
        self.ids, self.codes, self.lists = ids, codes, lists

    @classmethod
    def of(cls, ids: array, which: array, tags: list[str]) -> Members:
        """From (contact id, index in `tags`) pairs in the order found: each contact's triggers keep that order."""
        import numpy as np

        contact = np.frombuffer(ids, dtype=np.int64) if len(ids) else np.zeros(0, dtype=np.int64)
        tag = np.frombuffer(which, dtype=np.int32) if len(which) else np.zeros(0, dtype=np.int32)
        order = np.argsort(contact, kind="stable")
        contact, tag = contact[order], tag[order]
        del order
        first = np.flatnonzero(np.r_[True, contact[1:] != contact[:-1]]) if len(contact) else np.zeros(0, np.int64)
        unique = contact[first]
        sizes = np.diff(np.r_[first, len(contact)])
        shared: dict[tuple[str, ...], int] = {}
        lists: list[list[str]] = []

        def code_of(key: tuple[str, ...]) -> int:
            if key not in shared:
                shared[key] = len(lists)
                lists.append(list(key))
            return shared[key]

        # one trigger each (most contacts): their code is their trigger's; the rest one by one
        single = np.array([code_of((name,)) for name in tags], dtype=np.int32)
        codes = single[tag[first]] if len(tags) else np.zeros(0, dtype=np.int32)
        for at in np.flatnonzero(sizes > 1).tolist():
            start = int(first[at])
            codes[at] = code_of(tuple(tags[i] for i in tag[start:start + int(sizes[at])].tolist()))
        return cls(unique.copy(), codes, lists)

    def _at(self, contact_id) -> int:
        import numpy as np

        try:
            key = int(contact_id)
        except (TypeError, ValueError):
            return -1
        at = int(np.searchsorted(self.ids, key))
        return at if at < len(self.ids) and int(self.ids[at]) == key else -1

    def __getitem__(self, contact_id) -> list[str]:
        at = self._at(contact_id)
        if at < 0:
            raise KeyError(contact_id)
        return self.lists[int(self.codes[at])]

    def __contains__(self, contact_id) -> bool:
        return self._at(contact_id) >= 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids.tolist())

    def __len__(self) -> int:
        return len(self.ids)

    def id_chunks(self, size: int) -> Iterator[list[int]]:
        """The ids in ascending order, `size` at a time (no list of all of them)."""
        for start in range(0, len(self.ids), size):
            yield self.ids[start:start + size].tolist()

    def __repr__(self) -> str:
        return f"Members({dict(self)!r})"


def not_triggered(hook, contact_ids: Iterable[int]) -> dict[int, str]:
    """Why each of these contacts (asked for, but in no trigger group or tag) is not: contact id -> reason."""
    ids = sorted(set(int(c) for c in contact_ids))
    if not ids:
        return {}
    # `id IN` lifts the default is_deleted filter, so trashed contacts come back too
    found = {row["id"]: row for row in hook.get_in("Contact", "id", ids, {"select": ["id", "is_deleted"]})}
    return {cid: ("no such contact in CiviCRM" if cid not in found else
                  "the contact is in the trash" if found[cid].get("is_deleted") else
                  "not in a trigger group and without a trigger tag (now)") for cid in ids}


# --- watching for new trigger members (the near-real-time DAG) --------------------------------

#: Where the watcher reads what changed: group joins (SubscriptionHistory, written on every add and
#: re-add, with its own id) and tags given (EntityTag: a removed tag's row is deleted, a new one gets a new id).
WATCHED = {"history": "SubscriptionHistory", "tags": "EntityTag"}
WATCH_PAGE = 1000


@dataclass(frozen=True)
class Watched:
    """The static groups (with their static children) and tags the watcher reports joins to."""

    groups: frozenset[int]
    tags: frozenset[int]

    @classmethod
    def of(cls, *resolved: Triggers) -> Watched:
        return cls(frozenset(g for t in resolved for g in [*t.static_groups, *t.child_groups]),
                   frozenset(tag for t in resolved for tag in t.tags))


def resolve_watched(hook, groups: list, tags: list) -> Watched:
    """The setting entries (trigger and reset groups and tags) resolved to what the watcher reports."""
    return Watched.of(_resolve(hook, groups, tags, ("trigger_groups", "trigger_tags")))


def change_cursor(hook) -> dict[str, int]:
    """The newest SubscriptionHistory and EntityTag ids: where watching starts (one request)."""
    newest = hook.call_many({name: (entity, "get", {"select": ["id"], "orderBy": {"id": "DESC"}, "limit": 1})
                             for name, entity in WATCHED.items()})
    return {name: (rows[0]["id"] if rows else 0) for name, rows in newest.items()}


def changes_since(hook, cursor: dict[str, int], watched: Watched) -> tuple[dict[str, list[int]], dict[str, int]]:
    """New joins to watched groups and new watched tags after `cursor`: (the ids of the matching
    SubscriptionHistory and EntityTag rows, the new cursor). While nothing changes this is one request of
    two primary-key range reads that find nothing; the cursor moves past every row, matching or not, so no
    row is read twice."""
    found: dict[str, list[int]] = {"history": [], "tags": []}
    cursor = dict(cursor)
    select = {"history": ["id", "group_id", "status"], "tags": ["id", "tag_id", "entity_table"]}
    pending = set(WATCHED)
    while pending:
        pages = hook.call_many({name: (WATCHED[name], "get", {
            "select": select[name], "where": [["id", ">", cursor[name]]], "orderBy": {"id": "ASC"},
            "limit": WATCH_PAGE}) for name in sorted(pending)})
        for name, rows in pages.items():
            for row in rows:
                if name == "history" and row.get("status") == "Added" and row.get("group_id") in watched.groups:
                    found[name].append(row["id"])
                elif (name == "tags" and row.get("entity_table") == "civicrm_contact"
                      and row.get("tag_id") in watched.tags):
                    found[name].append(row["id"])
            if rows:
                cursor[name] = max(cursor[name], max(r["id"] for r in rows))
            if len(rows) < WATCH_PAGE:
                pending.discard(name)
    return found, cursor


def joined_contacts(hook, spans: dict[str, list[list[int]]], triggers: Triggers) -> set[int]:
    """The contacts the watcher's events name: joins to the trigger groups and trigger tags given within the
    events' id spans (`history` / `tags`: [first, last] SubscriptionHistory and EntityTag ids)."""
    groups = sorted({*triggers.static_groups, *triggers.child_groups})
    found: set[int] = set()
    for first, last in spans.get("history", []):
        if groups:
            found |= {row["contact_id"] for row in hook.get_all("SubscriptionHistory", {
                "select": ["contact_id"], "where": [["id", ">=", first], ["id", "<=", last], ["status", "=", "Added"],
                                                    ["group_id", "IN", groups]]})}
    for first, last in spans.get("tags", []):
        if triggers.tags:
            found |= {row["entity_id"] for row in hook.get_all("EntityTag", {
                "select": ["entity_id"], "where": [["id", ">=", first], ["id", "<=", last],
                                                   ["entity_table", "=", "civicrm_contact"],
                                                   ["tag_id", "IN", sorted(triggers.tags)]]})}
    return found


def reset_members(hook, resets: Triggers) -> dict[int, list[str]]:
    """Contact id -> the reset groups and tags it is in (`group:8`, `smart:9`, `tag:5`); linked or not."""
    sources: dict[int, list[str]] = defaultdict(list)
    for kind, groups in ((Source.GROUP, resets.static_groups), (Source.SMART, resets.smart_groups)):
        for group_id in groups:
            for row in hook.get_all("Contact", {"select": ["id"], "where": [["groups", "IN", [group_id]]]}):
                sources[row["id"]].append(source_tag(kind, group_id))
    if resets.tags:
        params = {"select": ["entity_id", "tag_id"],
                  "where": [["entity_table", "=", "civicrm_contact"], ["tag_id", "IN", list(resets.tags)]]}
        for row in hook.get_all("EntityTag", params):
            sources[row["entity_id"]].append(source_tag(Source.TAG, row["tag_id"]))
    return dict(sources)


CONTACT_SELECT = ["id", "contact_type", "first_name", "last_name", "display_name", "is_deceased",
                  "do_not_email", "preferred_language", "uf.uf_id", "uf.uf_name"]


def contact_details(hook, contact_ids: Iterable[int], domain_id: int) -> list[dict]:
    """Names, primary email and this domain's UFMatch of each contact; trashed contacts dropped.

    Emails are read on their own: a contact CiviCRM holds two primary emails for (imports can do
    that) would otherwise be two rows and break paging for everybody. The oldest primary email is
    used, and `email_note` says so.
    """
    params = {
        "select": CONTACT_SELECT,
        # `id IN` lifts the default is_deleted filter, so the trash is excluded explicitly
        "where": [["is_deleted", "=", False]],
        "join": [["UFMatch AS uf", "LEFT", ["uf.contact_id", "=", "id"], ["uf.domain_id", "=", domain_id]]],
    }
    rows = []
    for row in hook.get_in("Contact", "id", sorted(contact_ids), params):
        rows.append({
            "contact_id": row["id"],
            "contact_type": row.get("contact_type"),
            "first_name": row.get("first_name") or "",
            "last_name": row.get("last_name") or "",
            "display_name": row.get("display_name") or "",
            "email": None,
            "email_note": None,
            "is_deceased": bool(row.get("is_deceased")),
            "do_not_email": bool(row.get("do_not_email")),
            "preferred_language": row.get("preferred_language"),
            "uf_id": row.get("uf.uf_id"),
            "uf_name": row.get("uf.uf_name"),
        })
    primaries: dict[int, list[str]] = defaultdict(list)
    email_params = {"select": ["contact_id", "email"], "where": [["is_primary", "=", True]]}
    for email in hook.get_in("Email", "contact_id", [r["contact_id"] for r in rows], email_params):
        primaries[email["contact_id"]].append(email["email"])  # id order: the oldest first
    for row in rows:
        emails = primaries.get(row["contact_id"], [])
        row["email"] = emails[0] if emails else None
        if len(emails) > 1:
            row["email_note"] = f"has {len(emails)} primary emails; used the oldest"
    return rows


@dataclass
class History:
    """What the "User Account Creation" activities say about each contact."""

    attempts: dict[int, int] = field(default_factory=dict)  # Failed since the last give-up marker
    # activities of any status since the last give-up marker (Scheduled, Completed, Failed): the contact has
    # been tried before, which the near-real-time run leaves to the nightly one
    tried: dict[int, int] = field(default_factory=dict)
    journal: dict[int, list[JournalEntry]] = field(default_factory=dict)


_HISTORY_SELECT = ["contact_id", "activity_id", "activity_id.status_id:name", "activity_id.details"]


def activity_history(hook, contact_ids: Iterable[int], run_marker: str) -> History:
    """Attempts since each contact's last give-up marker, and every account journal entry it has.

    This run's own activities are not counted as attempts (a re-run of the same run counts
    once), but their journal entries are kept: the accounts they name are this run's own.
    """
    params = {
        "select": _HISTORY_SELECT,
        "where": [["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", ACTIVITY_TYPE]],
    }
    rows: dict[int, list[tuple[int, str]]] = defaultdict(list)
    history = History()
    for row in hook.get_in("ActivityContact", "contact_id", sorted(contact_ids), params):
        details = row.get("activity_id.details") or ""
        status = row.get("activity_id.status_id:name")
        entry = journal.parse(row["contact_id"], details, activity_id=row["activity_id"], status=status)
        if entry is not None:
            history.journal.setdefault(row["contact_id"], []).append(entry)
        if run_marker not in details:
            rows[row["contact_id"]].append((row["activity_id"], status))
    for contact_id, activities in rows.items():
        activities.sort()
        resets = [i for i, (_, status) in enumerate(activities) if status == RESET_STATUS]
        since = activities[resets[-1] + 1:] if resets else activities
        history.attempts[contact_id] = sum(1 for _, status in since if status == FAILED_STATUS)
        history.tried[contact_id] = len(since)
    return history


def journal_for(hook, contact_ids: Iterable[int]) -> dict[int, list[JournalEntry]]:
    """Every account journal entry of these contacts, of any run (the create batch reads this)."""
    params = {
        "select": _HISTORY_SELECT,
        "where": [["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", ACTIVITY_TYPE],
                  ["activity_id.details", "LIKE", f"%{journal.LINE_PREFIX}%"]],
    }
    found: dict[int, list[JournalEntry]] = defaultdict(list)
    for row in hook.get_in("ActivityContact", "contact_id", sorted(set(contact_ids)), params):
        entry = journal.parse(row["contact_id"], row.get("activity_id.details"), activity_id=row["activity_id"],
                              status=row.get("activity_id.status_id:name"))
        if entry is not None:
            found[row["contact_id"]].append(entry)
    return dict(found)


def save_journal(hook, entries: list[JournalEntry], *, subject: dict[int, str], stamp: str,
                 source: dict[int, int], marker: str, final: dict[int, dict] | None = None) -> dict[int, JournalEntry]:
    """Write journal entries in one call: new ones as Scheduled attempt activities, known ones by id.

    `final` gives some contacts' attempts their outcome in the same write: contact id -> the activity's
    status, subject and details (outcomes.activity_for), the journal line kept under the details.

    Returns contact id -> the entry with its activity id. The hook does not repeat a call that
    makes new activities (that could write them twice); a caller whose call failed reads the
    journal before it writes again.
    """
    if not entries:
        return {}
    final = final or {}
    records, statuses = [], []
    for entry in entries:
        outcome = final.get(entry.contact_id) or {}
        statuses.append(outcome.get("status") or entry.status or JOURNAL_STATUS)
        details = journal.details_text(outcome.get("details"), entry, [*entry.markers, marker])
        if entry.activity_id:
            record = {"id": entry.activity_id, "details": details}
        else:
            record = {
                "activity_type_id:name": ACTIVITY_TYPE, "status_id:name": JOURNAL_STATUS,
                "subject": subject.get(entry.contact_id) or "Creating CMS account", "details": details,
                "activity_date_time": stamp, "source_contact_id": int(source[entry.contact_id]),
                "target_contact_id": [int(entry.contact_id)],
            }
        if outcome:
            record.update({"status_id:name": outcome["status"], "subject": outcome["subject"]})
        records.append(record)
    saved = hook.call("Activity", "save", {"records": records})
    written = {}
    for entry, row, status in zip(entries, saved, statuses, strict=False):
        written[entry.contact_id] = dataclasses.replace(
            entry, activity_id=int(row.get("id") or entry.activity_id),
            markers=tuple(dict.fromkeys([*entry.markers, marker])), status=status)
    return written


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


def run_activities(hook, contact_ids: Iterable[int] | None, run_marker: str,
                   activity_type: str = ACTIVITY_TYPE) -> dict[int, list[dict]]:
    """Contact id -> this run's activities of `activity_type` (id, status, subject, details); of these
    contacts, or (None) of every contact this run wrote one for."""
    params = {
        "select": ["contact_id", "activity_id", "activity_id.status_id:name", "activity_id.subject",
                   "activity_id.details"],
        "where": [["record_type_id:name", "=", "Activity Targets"],
                  ["activity_id.activity_type_id:name", "=", activity_type],
                  ["activity_id.details", "LIKE", f"%{run_marker}%"]],
    }
    rows = hook.get_all("ActivityContact", params) if contact_ids is None else \
        hook.get_in("ActivityContact", "contact_id", sorted(set(contact_ids)), params)
    found: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        found[row["contact_id"]].append({
            "id": row["activity_id"], "status": row.get("activity_id.status_id:name"),
            "subject": row.get("activity_id.subject"), "details": row.get("activity_id.details") or ""})
    return dict(found)


def activities_by_id(hook, activity_ids: Iterable[int]) -> dict[int, dict]:
    """Activity id -> id, status, subject, details (for attempts an earlier run began)."""
    params = {"select": ["id", "status_id:name", "subject", "details"]}
    return {r["id"]: {"id": r["id"], "status": r.get("status_id:name"), "subject": r.get("subject"),
                      "details": r.get("details") or ""}
            for r in hook.get_in("Activity", "id", sorted(set(activity_ids)), params)}


def save_isolated(hook, entity: str, records: list[dict], key, params: dict | None = None,
                  unwritten=None) -> dict:
    """`save` records in chunks. A chunk CiviCRM refuses (one contact deleted or merged since the
    extract) is halved until the records at fault stand alone; the rest still land.

    `save` is not atomic: the records before the one at fault were written. `unwritten(part)`
    says which records of a refused chunk still need writing (records that create are not
    idempotent); without it every record is assumed idempotent (`match` or `id`).
    Returns key(record) -> CiviCRM's message for each refused record."""
    from civicrm_hooks.hook import CiviCRMAuthError, CiviCRMError, CiviCRMUnavailable

    errors: dict = {}

    def save(part: list[dict]) -> None:
        try:
            hook.call(entity, "save", {**(params or {}), "records": part})
        except (CiviCRMAuthError, CiviCRMUnavailable):
            raise
        except CiviCRMError as exc:
            if len(part) == 1:
                errors[key(part[0])] = exc.message
                return
            part = unwritten(part) if unwritten is not None else part
            middle = len(part) // 2
            if part:
                save(part[:middle])
                save(part[middle:])

    for start in range(0, len(records), WRITE_CHUNK):
        save(records[start:start + WRITE_CHUNK])
    return errors


def write_activities(hook, activities: list[dict]) -> dict[int, str]:
    """Create (or, with `id`, update) activities; returns contact id -> why CiviCRM refused its one.

    Each record carries `_contact_id` (removed before sending) to name the contact it is about.
    """
    contact_of = {id(record): record.pop("_contact_id") for record in activities if "_contact_id" in record}

    def unwritten(part: list[dict]) -> list[dict]:
        # a new activity carries its run's marker: one found for its contact and status was written
        new = [r for r in part if "id" not in r]
        landed = set()
        for kind in {r.get("activity_type_id:name", ACTIVITY_TYPE) for r in new}:
            of_kind = [r for r in new if r.get("activity_type_id:name", ACTIVITY_TYPE) == kind]
            for marker in {m for r in of_kind for m in journal.markers_in(r.get("details"))}:
                mine = run_activities(hook, [contact_of[id(r)] for r in of_kind], marker, kind)
                landed |= {(kind, cid, a["status"]) for cid, rows in mine.items() for a in rows}
        return [r for r in part if "id" in r or (r.get("activity_type_id:name", ACTIVITY_TYPE), contact_of[id(r)],
                                                 r["status_id:name"]) not in landed]

    return save_isolated(hook, "Activity", activities, key=lambda record: contact_of.get(id(record)),
                         unwritten=unwritten)


def add_to_history(hook, triggers: Triggers, contact_ids: list[int]) -> dict[int, str]:
    """History group membership (Added) and history tag, idempotently; contact id -> refusal."""
    errors: dict[int, str] = {}
    if triggers.history_group:
        errors.update(save_isolated(
            hook, "GroupContact",
            [{"contact_id": c, "group_id": triggers.history_group, "status": "Added"} for c in contact_ids],
            key=lambda r: r["contact_id"], params={"match": ["contact_id", "group_id"]}))
    if triggers.history_tag:
        errors.update(save_isolated(
            hook, "EntityTag",
            [{"entity_table": "civicrm_contact", "entity_id": c, "tag_id": triggers.history_tag}
             for c in contact_ids],
            key=lambda r: r["entity_id"], params={"match": ["entity_table", "entity_id", "tag_id"]}))
    return errors


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

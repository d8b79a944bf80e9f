"""In-memory tables of the emulated CiviCRM: rows by id, a sorted id list for keyset scans, hash indexes.

No validation happens here (that is the API layer's job, in actions.py); the store keeps the indexes
right and answers the lookups the query engine and the write rules need.
"""

from __future__ import annotations

import bisect
import contextlib
from datetime import datetime
from typing import Any

from .schema import ARRAY, BOOLEAN, DATETIME, FIELDS, FIXED_OPTIONS, INTEGER, Field


class ApiError(Exception):
    """An API exception: answered as HTTP `status` with the JSON error shape."""

    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.message = message
        self.status = status


def norm_key(value: Any) -> Any:
    """Index/comparison key: MySQL's default collations compare strings case-insensitively."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, bool):
        return int(value)
    return value


def now_string() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def coerce(field: Field, value: Any, *, user_contact_id: int | None = None) -> Any:
    """A written or compared value in the field's storage type (raises ApiError when it cannot be)."""
    if value is None:
        return None
    dt = field.data_type
    if value == "user_contact_id" and user_contact_id is not None and (
            field.fk == "Contact" or field.name in ("id", "contact_id")):
        return user_contact_id if dt != ARRAY else [user_contact_id]
    if dt == INTEGER:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            if text == "":
                return None
            try:
                return int(text)
            except ValueError:
                pass
        raise ApiError(f"Invalid value for field {field.name}: {value!r}")
    if dt == BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return bool(value)
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes"):
                return True
            if low in ("0", "false", "no", ""):
                return False
        raise ApiError(f"Invalid value for field {field.name}: {value!r}")
    if dt == DATETIME:
        text = str(value).strip()
        if text == "":
            return None
        if text == "now":
            return now_string()
        try:
            parsed = datetime.fromisoformat(text.replace("T", " "))
        except ValueError as exc:
            raise ApiError(f"Invalid date/time for field {field.name}: {value!r}") from exc
        return parsed.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S")
    if dt == ARRAY:
        if isinstance(value, list | tuple | set):
            items = list(value)
        elif isinstance(value, str):
            items = [v for v in value.replace("\x01", ",").split(",") if v != ""]
        else:
            items = [value]
        if field.fk:  # arrays of ids
            return [coerce(Field(field.name, INTEGER, fk=field.fk), v, user_contact_id=user_contact_id)
                    for v in items]
        return [str(v) for v in items]
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict | list):
        raise ApiError(f"Invalid value for field {field.name}: expected text")
    return str(value)


class Table:
    def __init__(self, entity: str, on_change=lambda: None):
        self.entity = entity
        self.on_change = on_change  # bumps the store's version (cache invalidation)
        self.rows: dict[int, dict] = {}
        self.ids: list[int] = []  # kept sorted: keyset scans bisect into it
        self.next_id = 1
        self.index_fields = [f.name for f in FIELDS[entity].values() if f.indexed]
        self.indexes: dict[str, dict[Any, set[int]]] = {name: {} for name in self.index_fields}
        self.undo: list | None = None  # set by Store.transaction(): how to take back each change

    def __len__(self) -> int:
        return len(self.rows)

    def insert(self, row: dict, row_id: int | None = None) -> dict:
        if row_id is None:
            row_id = self.next_id
        row = {"id": row_id, **{k: v for k, v in row.items() if k != "id"}}  # id first, as CiviCRM answers
        self.on_change()
        self.rows[row_id] = row
        if not self.ids or row_id > self.ids[-1]:
            self.ids.append(row_id)
        else:
            bisect.insort(self.ids, row_id)
        self.next_id = max(self.next_id, row_id + 1)
        for name in self.index_fields:
            self._index_add(name, row.get(name), row_id)
        if self.undo is not None:
            self.undo.append(lambda: self.delete(row_id))
        return row

    def update(self, row_id: int, changes: dict) -> dict:
        row = self.rows[row_id]
        if self.undo is not None:
            before = {name: row.get(name) for name in changes}
            self.undo.append(lambda: self.update(row_id, before))
        self.on_change()
        for name, value in changes.items():
            if name in self.indexes and norm_key(row.get(name)) != norm_key(value):
                self._index_remove(name, row.get(name), row_id)
                self._index_add(name, value, row_id)
            row[name] = value
        return row

    def delete(self, row_id: int) -> dict | None:
        row = self.rows.pop(row_id, None)
        if row is None:
            return None
        self.on_change()
        pos = bisect.bisect_left(self.ids, row_id)
        if pos < len(self.ids) and self.ids[pos] == row_id:
            del self.ids[pos]
        for name in self.index_fields:
            self._index_remove(name, row.get(name), row_id)
        if self.undo is not None:
            self.undo.append(lambda: self.insert(dict(row), row_id))
        return row

    def lookup(self, name: str, value: Any) -> set[int]:
        """Ids whose indexed field equals value (case-insensitively for text)."""
        return self.indexes[name].get(norm_key(value), set())

    def _index_add(self, name, value, row_id):
        if value is not None:
            self.indexes[name].setdefault(norm_key(value), set()).add(row_id)

    def _index_remove(self, name, value, row_id):
        if value is not None:
            bucket = self.indexes[name].get(norm_key(value))
            if bucket is not None:
                bucket.discard(row_id)
                if not bucket:
                    del self.indexes[name][norm_key(value)]


class Store:
    def __init__(self):
        self.version = 0  # bumped on every write; derived caches (group membership) key on it
        self.tables: dict[str, Table] = {entity: Table(entity, self._bump) for entity in FIELDS}
        # smart groups: a fixed member list (the group contact cache) and/or a stored Contact.get where
        self.smart_members: dict[int, set[int]] = {}
        self.smart_criteria: dict[int, list] = {}

    def _bump(self) -> None:
        self.version += 1

    @contextlib.contextmanager
    def transaction(self):
        """All of the block's changes, or none: an exception takes back every row it wrote."""
        undo: list = []
        for table in self.tables.values():
            table.undo = undo
        try:
            yield
        except BaseException:
            for table in self.tables.values():
                table.undo = None
            for step in reversed(undo):
                step()
            raise
        finally:
            for table in self.tables.values():
                table.undo = None

    def table(self, entity: str) -> Table:
        return self.tables[entity]

    def row(self, entity: str, row_id: Any) -> dict | None:
        if not isinstance(row_id, int) or isinstance(row_id, bool):
            return None
        return self.tables[entity].rows.get(row_id)

    # --- pseudoconstants ------------------------------------------------------------------

    def options(self, source: str) -> list[tuple[Any, str, str]]:
        """(value, name, label) triples of a pseudoconstant source."""
        if source in FIXED_OPTIONS:
            return FIXED_OPTIONS[source]
        if source.startswith("og:"):
            # option groups are few: a scan is fine
            group = next((g for g in self.tables["OptionGroup"].rows.values() if g["name"] == source[3:]), None)
            if group is None:
                return []
            values = self.tables["OptionValue"]
            rows = sorted((values.rows[i] for i in values.lookup("option_group_id", group["id"])),
                          key=lambda r: (r.get("weight") or 0, r["id"]))
            return [(r.get("value"), r.get("name"), r.get("label")) for r in rows]
        if source.startswith("entity:"):
            entity = source[7:]
            label_field = {"Group": "title", "OptionGroup": "title", "Tag": "label", "Domain": "name"}[entity]
            return [(r["id"], r.get("name"), r.get(label_field) or r.get("name"))
                    for r in self.tables[entity].rows.values()]
        raise KeyError(source)

    def option_maps(self, field: Field) -> tuple[dict, dict, dict]:
        """(value -> name, value -> label, (suffix, text) -> value) lookups, values in storage type."""
        to_name, to_label, from_any = {}, {}, {}
        for value, name, label in self.options(field.options):
            stored = value
            if field.data_type in (INTEGER,) or (field.data_type == ARRAY and field.fk):
                try:
                    stored = int(value)
                except (TypeError, ValueError):
                    continue
            to_name.setdefault(stored, name)
            to_label.setdefault(stored, label)
            from_any.setdefault(("name", name), stored)
            from_any.setdefault(("label", label), stored)
        return to_name, to_label, from_any

    # --- derived facts -------------------------------------------------------------------

    def primary_email_id(self, contact_id: int) -> int | None:
        emails = self.tables["Email"]
        for email_id in emails.lookup("contact_id", contact_id):
            if emails.rows[email_id].get("is_primary"):
                return email_id
        return None

    def group_children(self, group_id: int) -> list[int]:
        return sorted(g["id"] for g in self.tables["Group"].rows.values() if group_id in (g.get("parents") or []))

    def expand_groups(self, group_ids) -> list[int]:
        """The groups plus all their descendants (CiviCRM expands child groups in the `groups` filter)."""
        seen: list[int] = []
        todo = [g for g in group_ids if g is not None]
        while todo:
            gid = todo.pop()
            if gid in seen:
                continue
            seen.append(gid)
            todo.extend(self.group_children(gid))
        return seen

    def group_members(self, group_ids, smart_evaluator=None) -> set[int]:
        """Contact ids in the groups as Contact's `groups` filter sees them (before the trash filter)."""
        groups = self.tables["Group"].rows
        gcs = self.tables["GroupContact"]
        members: set[int] = set()
        for gid in self.expand_groups(group_ids):
            group = groups.get(gid)
            if group is None:
                continue
            removed = set()
            for gc_id in gcs.lookup("group_id", gid):
                gc = gcs.rows[gc_id]
                if gc["status"] == "Added":
                    members.add(gc["contact_id"])
                elif gc["status"] == "Removed":
                    removed.add(gc["contact_id"])
            # Only active smart groups contribute cache rows; a Removed row opts the contact out.
            if group.get("saved_search_id") and group.get("is_active"):
                smart = set(self.smart_members.get(gid, ()))
                if gid in self.smart_criteria and smart_evaluator is not None:
                    smart |= smart_evaluator(self.smart_criteria[gid])
                members |= smart - removed
        return members

"""APIv4 actions of the emulated CiviCRM: request validation, get/create/update/save/delete/replace,
getFields/getActions, chaining, and each entity's write rules (defaults, FKs, unique keys, side rows).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from .query import Engine
from .schema import (
    ARRAY,
    FIELDS,
    NOTSET,
    READ_ACTIONS,
    READ_ONLY_ENTITIES,
    WRITE_ACTIONS,
    Field,
    allowed_params,
    needed_permission,
)
from .store import ApiError, Store, coerce, norm_key, now_string

ALREADY_EXISTS = "DB Error: already exists"
CONSTRAINT = "DB Error: constraint violation"
RECORD_TYPES = {"assignee_contact_id": "Activity Assignees", "source_contact_id": "Activity Source",
                "target_contact_id": "Activity Targets"}


@dataclass
class Result:
    entity: str
    action: str
    values: Any
    count: int
    count_fetched: int
    count_matched: int | None = None


def title_to_var(title: str, max_length: int = 64) -> str:
    """CRM_Utils_String::titleToVar: runs of non-word characters become `_`."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", title.strip())[:max_length]


class Api:
    def __init__(self, store: Store, *, email_primary: bool):
        self.store = store
        self.email_primary = email_primary
        self.denied: set[tuple[str, str | None]] = set()
        self.permissions: set[str] | None = None  # the API contact's, with implications; None: all

    def may(self, entity: str, action: str) -> bool:
        needed = needed_permission(entity, action)
        return self.permissions is None or needed is None or needed in self.permissions

    # --- entry point ------------------------------------------------------------------------

    def run(self, entity: str, action: str, params: Any, *, user_contact_id: int) -> Result:
        if entity not in FIELDS:
            raise ApiError(f"API ({entity}, {action}) does not exist (or the extension it belongs to is not enabled).")
        actions = READ_ACTIONS + (() if entity in READ_ONLY_ENTITIES else WRITE_ACTIONS)
        if action not in actions:
            raise ApiError(f"Api {entity} {action} version 4 does not exist.")
        if isinstance(params, list) and not params:
            params = {}  # PHP decodes `[]` and `{}` alike
        if not isinstance(params, dict):
            raise ApiError("Invalid params: expected a JSON object")
        allowed = allowed_params(entity, action)
        for key in params:
            if key not in allowed:
                method = "set" + key[:1].upper() + key[1:]
                raise ApiError(f"Unknown api parameter: {method}")  # as 5.76 words it
        if "version" in params and str(params["version"]) != "4":
            raise ApiError(f"Cannot execute API version {params['version']} with Api4")
        # checkPermissions is forced TRUE over REST: whatever the client sent, the check runs
        if (entity, action) in self.denied or (entity, None) in self.denied:
            raise ApiError("Authorization failed", status=403)
        if action != "checkAccess" and not self.may(entity, action):
            # as 5.76 answers: reads that ACLs narrow return nothing, the rest are refused
            if action == "get" and entity == "Contact":  # only the contact's own record
                params = {**params, "where": [*(params.get("where") or []), ["id", "=", user_contact_id]]}
            elif action == "get" and entity in ("Email", "ActivityContact"):
                return Result(entity, action, [], 0, 0, None)
            else:
                raise ApiError("Authorization failed", status=403)
        engine = Engine(self.store, user_contact_id=user_contact_id, email_primary=self.email_primary)
        ctx = _Call(self, engine, entity, action, params, user_contact_id)
        result = getattr(ctx, "do_" + action)()
        if params.get("chain") and isinstance(result.values, list):
            self._run_chains(result.values, params["chain"], user_contact_id)
        return result

    def _run_chains(self, rows: list, chain: Any, user_contact_id: int) -> None:
        if not isinstance(chain, dict):
            raise ApiError("chain must be an object {name: [entity, action, params]}")
        for row in rows:
            if not isinstance(row, dict):
                continue
            for name, spec in chain.items():
                if not isinstance(spec, list) or len(spec) < 2:
                    raise ApiError(f"Invalid chain {name!r}")
                sub_params = _substitute(copy.deepcopy(spec[2] if len(spec) > 2 else {}), row)
                sub = self.run(spec[0], spec[1], sub_params, user_contact_id=user_contact_id)
                row[name] = apply_index(sub.values, spec[3] if len(spec) > 3 else None)


def apply_index(values: Any, index: Any) -> Any:
    """The `index` request field: an integer picks one record, a field name keys the records by it."""
    if index is None or index == "" or not isinstance(values, list):
        return values
    if isinstance(index, int) or (isinstance(index, str) and index.lstrip("-").isdigit()):
        position = int(index)
        return values[position] if -len(values) <= position < len(values) else None
    return {str(row.get(index)): row for row in values if isinstance(row, dict)}


def _substitute(value: Any, row: dict) -> Any:
    if isinstance(value, str) and value.startswith("$") and len(value) > 1:
        return row.get(value[1:], value)
    if isinstance(value, list):
        return [_substitute(v, row) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, row) for k, v in value.items()}
    return value


class _Call:
    """One action invocation: the entity's write rules live here so they can see the action params."""

    def __init__(self, api: Api, engine: Engine, entity: str, action: str, params: dict, user_contact_id: int):
        self.api, self.engine, self.store = api, engine, api.store
        self.entity, self.action, self.params = entity, action, params
        self.user = user_contact_id
        self.fields = engine.fields(entity)
        self.table = self.store.table(entity)

    def _result(self, values: list, count_matched: int | None = None) -> Result:
        return Result(self.entity, self.action, values, len(values), len(values), count_matched)

    # --- reads ------------------------------------------------------------------------------

    def do_get(self) -> Result:
        got = self.engine.get(self.entity, self.params)
        return Result(self.entity, "get", got.values, got.count, len(got.values), got.count_matched)

    def do_getActions(self) -> Result:  # noqa: N802 - APIv4 action name
        actions = READ_ACTIONS + (() if self.entity in READ_ONLY_ENTITIES else WRITE_ACTIONS)
        return self._result([{"name": a} for a in actions])

    def do_getFields(self) -> Result:  # noqa: N802 - APIv4 action name
        action = self.params.get("action") or "get"
        load_options = self.params.get("loadOptions") or False
        rows = []
        for field in self.fields.values():
            if action == "get" and field.kind == "writeonly":
                continue
            if action != "get" and field.kind in ("filter", "extra", "computed"):
                continue
            info = {
                "name": field.name,
                "title": field.title or field.name.replace("_", " ").title(),
                "entity": self.entity,
                "data_type": "Integer" if field.data_type == ARRAY and field.fk else
                ("String" if field.data_type == ARRAY else field.data_type),
                "type": {"filter": "Filter", "extra": "Extra"}.get(field.kind, "Field"),
                "required": field.required and action in ("create", "save"),
                "default_value": None if field.default is NOTSET else field.default,
                "fk_entity": field.fk,
                "readonly": field.kind == "computed" or field.name == "id",
                "serialize": 1 if field.data_type == ARRAY else None,
                "options": bool(field.options),
            }
            if load_options and field.options:
                options = self.store.options(field.options)
                if isinstance(load_options, list):
                    info["options"] = [{k: v for k, v in (("id", value), ("name", name), ("label", label))
                                        if k in load_options} for value, name, label in options]
                else:
                    info["options"] = {str(value): label for value, name, label in options}
            rows.append(info)
        select = self.params.get("select") or []
        for clause in self.params.get("where") or []:
            if isinstance(clause, list) and len(clause) == 3 and clause[1] in ("=", "IN"):
                wanted = clause[2] if clause[1] == "IN" else [clause[2]]
                rows = [r for r in rows if r.get(clause[0]) in wanted]
        if select:
            rows = [{k: r.get(k) for k in select if k != "row_count"} for r in rows]
        return self._result(rows)

    # --- writes -----------------------------------------------------------------------------

    def do_create(self) -> Result:
        values = self.params.get("values") or {}
        if not isinstance(values, dict):
            raise ApiError("values must be an object")
        if values.get("id") not in (None, "", 0):
            raise ApiError("Cannot pass id to Create action. Use Update action instead.")
        return self._result([self.create(self.resolve(values), label="create")])

    def do_checkAccess(self) -> Result:  # noqa: N802
        checked = self.params.get("action")
        if not checked:
            raise ApiError('Parameter "action" is required.')
        if self.params.get("values") is None:
            raise ApiError('Parameter "values" is required.')
        return self._result([{"access": self.api.may(self.entity, checked)}])

    def do_update(self) -> Result:
        values = self.params.get("values") or {}
        if not isinstance(values, dict):
            raise ApiError("values must be an object")
        resolved = self.resolve(values)
        where = list(self.params.get("where") or [])
        if resolved.get("id") is not None:
            where.append(["id", "=", resolved["id"]])
        if not where:
            raise ApiError('Parameter "where" is required unless primary keys are supplied in values.')
        resolved.pop("id", None)
        only_id = _single_id(where)
        if only_id is not None:
            # 5.76 checks the row exists (older releases "succeeded" for a missing one)
            if only_id not in self.table.rows:
                raise ApiError(f"Expected one {self.entity} but found 0")
            return self._result([self.update(only_id, resolved)])
        ids = self.engine.get_ids(self.entity, where, self.params.get("orderBy"), self.params.get("limit") or 0)
        return self._result([self.update(row_id, dict(resolved)) for row_id in ids])

    def do_save(self) -> Result:
        records = self.params.get("records")
        if records is None:
            raise ApiError('Parameter "records" is required.')
        if not isinstance(records, list):
            raise ApiError("records must be a list")
        defaults = self.params.get("defaults") or {}
        match = self.params.get("match") or []
        out = []
        # 5.76 saves a batch in one transaction: a record CiviCRM refuses undoes the earlier ones
        with self.store.transaction():
            for record in records:
                if not isinstance(record, dict):
                    raise ApiError("Each record must be an object")
                resolved = self.resolve({**defaults, **record})
                row_id = resolved.pop("id", None)
                if row_id is None and match:
                    row_id = self.match_existing(resolved, match)
                if row_id is not None:
                    out.append(self.update(row_id, resolved))
                else:
                    out.append(self.create(resolved, label="save"))
        return self._result(out)  # no countMatched on 5.76

    def do_delete(self) -> Result:
        where = self.params.get("where") or []
        if not where:
            raise ApiError('Parameter "where" is required.')
        ids = self.engine.get_ids(self.entity, where, self.params.get("orderBy"), self.params.get("limit") or 0)
        for row_id in ids:
            self.delete(row_id)
        return self._result([{"id": str(row_id)} for row_id in ids])  # 5.76 answers the ids as strings

    def do_replace(self) -> Result:
        where = self.params.get("where") or []
        existing = set(self.engine.get_ids(self.entity, where))
        saved = self.do_save()
        keep = {row["id"] for row in saved.values}
        for row_id in sorted(existing - keep):
            self.delete(row_id)
        return self._result(saved.values)

    # --- shared write steps -------------------------------------------------------------------

    def resolve(self, values: dict) -> dict:
        """Suffix keys (`status_id:name`) to stored values, types coerced, unknown keys dropped."""
        out: dict = {}
        for key, value in values.items():
            name, sep, suffix = key.partition(":")
            if key == "email_primary.email" and self.entity == "Contact" and self.api.email_primary:
                out[key] = value
                continue
            field = self.fields.get(name)
            if field is None or field.kind in ("filter", "extra", "computed"):
                continue  # unknown keys are ignored by the BAO
            if sep:
                if suffix not in ("name", "label") or not field.options:
                    continue
                _, _, lookup = self.store.option_maps(field)
                if isinstance(value, list):
                    value = [lookup.get((suffix, v)) for v in value]
                else:
                    value = lookup.get((suffix, value))  # an unknown name becomes NULL, without error
            out[name] = coerce(field, value, user_contact_id=self.user)
        return out

    def match_existing(self, record: dict, match: list) -> int | None:
        """MatchParamTrait: exactly one existing row (found through `get`, default filters on) → update it."""
        where = []
        for name in match:
            if name not in record:
                return None
            value = record[name]
            where.append([name, "IS EMPTY"] if value in (None, "") else [name, "=", value])
        ids = self.engine.get_ids(self.entity, where, limit=2)
        return ids[0] if len(ids) == 1 else None

    def create(self, values: dict, *, label: str, row_id: int | None = None, output: bool = True) -> dict:
        values = dict(values)
        self._fill_defaults(values)
        missing = [name for name in _required(self.entity) if values.get(name) in (None, "", [])]
        if missing:
            raise ApiError(f"Mandatory values missing from Api4 {self.entity}::{label}: {', '.join(missing)}")
        existing = self._before_insert(values)
        if existing is not None:
            return self._output(existing) if output else existing
        row = self.table.insert({name: _clone(values.get(name)) for name in _stored(self.entity)}, row_id)
        self._after_write(row, values, created=True, previous={})
        if not output:
            return row
        echo = {k: v for k, v in values.items() if k not in row}
        if self.entity == "Activity" and "target_contact_id" in echo:
            echo["target_contact_id"] = None  # 5.76 answers null for the targets it just wrote
        return {**self._output(row), **echo}

    def update(self, row_id: int, values: dict) -> dict:
        row = self.table.rows.get(row_id)
        if row is None:
            return {"id": row_id, **values}
        changes = {k: v for k, v in values.items() if k in self.fields and self.fields[k].kind == "field"
                   and k != "id"}
        self._before_update(row, changes)
        previous = dict(row)
        self.table.update(row_id, changes)
        self._after_write(row, values, created=False, previous=previous)
        return {"id": row_id, **values}

    def delete(self, row_id: int) -> None:
        hook = getattr(self, f"_delete_{self.entity}", None)
        if hook is not None:
            hook(row_id)
        else:
            self.table.delete(row_id)

    def _output(self, row: dict) -> dict:
        return {k: _clone(v) for k, v in row.items()}

    def _fill_defaults(self, values: dict) -> None:
        prepare = getattr(self, f"_prepare_{self.entity}", None)
        if prepare is not None:
            prepare(values)
        for name, default in _defaults(self.entity):
            if values.get(name) is None:
                values[name] = _clone(default)

    def _before_insert(self, values: dict) -> dict | None:
        check = getattr(self, f"_check_{self.entity}", None)
        return check(values, None) if check is not None else None

    def _before_update(self, row: dict, changes: dict) -> None:
        check = getattr(self, f"_check_{self.entity}", None)
        if check is not None:
            merged = {**row, **changes}
            check(merged, row["id"])

    def _after_write(self, row: dict, values: dict, *, created: bool, previous: dict) -> None:
        after = getattr(self, f"_after_{self.entity}", None)
        if after is not None:
            after(row, values, created, previous)

    def _require_row(self, entity: str, row_id: Any) -> None:
        if row_id is not None and self.store.row(entity, row_id) is None:
            raise ApiError(CONSTRAINT)

    def _unique(self, names: tuple[str, ...], values: dict, self_id: int | None) -> None:
        key = tuple(norm_key(values.get(n)) for n in names)
        if any(k is None for k in key):
            return
        for other in self.table.rows.values():
            if other["id"] != self_id and tuple(norm_key(other.get(n)) for n in names) == key:
                raise ApiError(ALREADY_EXISTS)

    # --- Contact ------------------------------------------------------------------------------

    def _after_Contact(self, row, values, created, previous):  # noqa: N802
        if "email_primary.email" in values:
            email = values["email_primary.email"]
            primary = self.store.primary_email_id(row["id"])
            emails = self.store.table("Email")
            if primary is not None and email:
                emails.update(primary, {"email": str(email)})
            elif email:
                emails.insert({"contact_id": row["id"], "email": str(email), "is_primary": True,
                               "location_type_id": 1, "on_hold": 0, "is_bulkmail": False, "is_billing": False})
        explicit = "display_name" in values or "sort_name" in values
        if not explicit:
            refresh_contact_names(self.store, row)

    def _delete_Contact(self, row_id):  # noqa: N802
        use_trash = self.params.get("useTrash", True)
        if use_trash not in (False, 0, "0", "false"):
            self.table.update(row_id, {"is_deleted": True})
            return
        delete_contact_hard(self.store, row_id)

    # --- Email --------------------------------------------------------------------------------

    def _check_Email(self, values, self_id):  # noqa: N802
        self._require_row("Contact", values.get("contact_id"))

    def _after_Email(self, row, values, created, previous):  # noqa: N802
        emails = self.store.table("Email")
        siblings = [i for i in emails.lookup("contact_id", row["contact_id"]) if i != row["id"]]
        if row.get("is_primary"):
            for other in siblings:
                if emails.rows[other].get("is_primary"):
                    emails.update(other, {"is_primary": False})
        elif not any(emails.rows[i].get("is_primary") for i in siblings):
            emails.update(row["id"], {"is_primary": True})  # the first email of a contact is primary
        contact = self.store.row("Contact", row["contact_id"])
        if contact is not None:
            refresh_contact_names(self.store, contact)

    def _delete_Email(self, row_id):  # noqa: N802
        emails = self.store.table("Email")
        row = emails.delete(row_id)
        if row and row.get("is_primary"):
            rest = sorted(emails.lookup("contact_id", row["contact_id"]))
            if rest:
                emails.update(rest[0], {"is_primary": True})

    # --- Group, GroupContact --------------------------------------------------------------------

    def _prepare_Group(self, values):  # noqa: N802
        if not values.get("name") and values.get("title"):
            values["name"] = title_to_var(str(values["title"]))

    def _check_Group(self, values, self_id):  # noqa: N802
        self._unique(("name",), values, self_id)
        self._unique(("title",), values, self_id)

    def _delete_Group(self, row_id):  # noqa: N802
        gcs = self.store.table("GroupContact")
        for gc_id in list(gcs.lookup("group_id", row_id)):
            gcs.delete(gc_id)
        history = self.store.table("SubscriptionHistory")
        for h_id in [h["id"] for h in history.rows.values() if h.get("group_id") == row_id]:
            history.delete(h_id)
        for group in list(self.table.rows.values()):
            if row_id in (group.get("parents") or []):
                self.table.update(group["id"], {"parents": [p for p in group["parents"] if p != row_id]})
        self.table.delete(row_id)
        self.store.smart_members.pop(row_id, None)
        self.store.smart_criteria.pop(row_id, None)

    def _check_GroupContact(self, values, self_id):  # noqa: N802
        self._require_row("Group", values.get("group_id"))
        self._require_row("Contact", values.get("contact_id"))
        gcs = self.store.table("GroupContact")
        for other in gcs.lookup("contact_id", values.get("contact_id")):
            if other != self_id and gcs.rows[other]["group_id"] == values.get("group_id"):
                raise ApiError(ALREADY_EXISTS)

    def _after_GroupContact(self, row, values, created, previous):  # noqa: N802
        if created or previous.get("status") != row.get("status"):
            self._history(row, row.get("status"))

    def _delete_GroupContact(self, row_id):  # noqa: N802
        row = self.table.delete(row_id)
        if row is not None:
            self._history(row, "Deleted")

    def _history(self, row: dict, status: str | None) -> None:
        self.store.table("SubscriptionHistory").insert({
            "contact_id": row["contact_id"], "group_id": row["group_id"], "date": now_string(),
            "method": self.params.get("method"), "status": status,
            "tracking": self.params.get("tracking")})

    # --- Tag, EntityTag -------------------------------------------------------------------------

    def _prepare_Tag(self, values):  # noqa: N802
        if not values.get("name") and values.get("label"):
            values["name"] = title_to_var(str(values["label"]))
        if not values.get("label") and values.get("name"):
            values["label"] = values["name"]

    def _check_Tag(self, values, self_id):  # noqa: N802
        self._unique(("name",), values, self_id)

    def _delete_Tag(self, row_id):  # noqa: N802
        entity_tags = self.store.table("EntityTag")
        for et_id in list(entity_tags.lookup("tag_id", row_id)):
            entity_tags.delete(et_id)
        self.table.delete(row_id)

    def _check_EntityTag(self, values, self_id):  # noqa: N802
        self._require_row("Tag", values.get("tag_id"))
        existing = self._entity_tag(values, self_id)
        if existing is not None:
            raise ApiError(ALREADY_EXISTS)  # 5.76: a repeated create is a DB error (save with match is not)
        return None

    def _entity_tag(self, values, self_id):
        for other in self.table.lookup("tag_id", values.get("tag_id")):
            row = self.table.rows[other]
            if other != self_id and row.get("entity_id") == values.get("entity_id") and \
                    row.get("entity_table") == values.get("entity_table"):
                return row
        return None

    # --- UFMatch ------------------------------------------------------------------------------

    def _check_UFMatch(self, values, self_id):  # noqa: N802
        self._require_row("Contact", values.get("contact_id"))
        if self_id is None:
            # UFMatch::create(): a row equal in every given field is returned without saving
            given = {k: v for k, v in values.items() if k in self.fields and v is not None and k != "id"}
            candidates = self.table.lookup("uf_id", given.get("uf_id")) if "uf_id" in given else self.table.rows
            for other in candidates:
                row = self.table.rows[other]
                if all(norm_key(row.get(k)) == norm_key(v) for k, v in given.items()):
                    return row
        for names, index in ((("contact_id", "domain_id"), "contact_id"), (("uf_name", "domain_id"), "uf_name")):
            if values.get(names[0]) is None:
                continue
            for other in self.table.lookup(index, values[names[0]]):
                if other != self_id and self.table.rows[other].get("domain_id") == values.get("domain_id"):
                    raise ApiError(ALREADY_EXISTS)
        return None

    # --- Activity, ActivityContact --------------------------------------------------------------

    def _prepare_Email(self, values):  # noqa: N802
        if values.get("contact_id") is None:  # 5.76's create spec defaults it to the current user
            values["contact_id"] = self.user

    def _prepare_Activity(self, values):  # noqa: N802
        now = now_string()
        values.setdefault("activity_date_time", now)
        if values.get("activity_date_time") is None:
            values["activity_date_time"] = now
        values.setdefault("created_date", now)
        values.setdefault("modified_date", now)

    def _check_Activity(self, values, self_id):  # noqa: N802
        for name in RECORD_TYPES:
            ids = values.get(name)
            for contact_id in ids if isinstance(ids, list) else [ids]:
                self._require_row("Contact", contact_id)
        return None

    def _after_Activity(self, row, values, created, previous):  # noqa: N802
        record_types = self._record_types()
        links = self.store.table("ActivityContact")
        for name, type_name in RECORD_TYPES.items():
            if name not in values:
                continue
            ids = values[name]
            ids = [i for i in (ids if isinstance(ids, list) else [ids]) if i is not None]
            record_type = record_types.get(type_name)
            for link_id in list(links.lookup("activity_id", row["id"])):
                if links.rows[link_id].get("record_type_id") == record_type:
                    links.delete(link_id)
            for contact_id in dict.fromkeys(ids):
                links.insert({"activity_id": row["id"], "contact_id": contact_id, "record_type_id": record_type})

    def _record_types(self) -> dict[str, int]:
        _, _, lookup = self.store.option_maps(FIELDS["ActivityContact"]["record_type_id"])
        return {name: value for (kind, name), value in lookup.items() if kind == "name"}

    def _delete_Activity(self, row_id):  # noqa: N802
        links = self.store.table("ActivityContact")
        for link_id in list(links.lookup("activity_id", row_id)):
            links.delete(link_id)
        self.table.delete(row_id)

    def _check_ActivityContact(self, values, self_id):  # noqa: N802
        self._require_row("Activity", values.get("activity_id"))
        self._require_row("Contact", values.get("contact_id"))

    # --- OptionGroup, OptionValue ---------------------------------------------------------------

    def _check_OptionGroup(self, values, self_id):  # noqa: N802
        self._unique(("name",), values, self_id)

    def _delete_OptionGroup(self, row_id):  # noqa: N802
        option_values = self.store.table("OptionValue")
        for value_id in list(option_values.lookup("option_group_id", row_id)):
            option_values.delete(value_id)
        self.table.delete(row_id)

    def _prepare_OptionValue(self, values):  # noqa: N802
        group_id = values.get("option_group_id")
        if values.get("label") and not values.get("name"):
            values["name"] = title_to_var(str(values["label"]))
        siblings = [self.table.rows[i] for i in self.table.lookup("option_group_id", group_id)] \
            if group_id is not None else []
        if values.get("value") in (None, ""):
            # OptionValue::getDefaultValue(): max numeric value in the group + 1, as a string
            numbers = [int(float(r["value"])) for r in siblings if _is_number(r.get("value"))]
            values["value"] = str(max(numbers, default=0) + 1)
        if values.get("weight") is None:
            values["weight"] = max((r.get("weight") or 0 for r in siblings), default=0) + 1

    def _check_OptionValue(self, values, self_id):  # noqa: N802
        self._require_row("OptionGroup", values.get("option_group_id"))


def _clone(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value  # lists are the only mutable values stored


@cache
def _stored(entity: str) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS[entity].values() if f.kind == "field" and f.name != "id")


@cache
def _required(entity: str) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS[entity].values() if f.required)


@cache
def _defaults(entity: str) -> tuple[tuple[str, Any], ...]:
    return tuple((f.name, f.default) for f in FIELDS[entity].values() if f.default is not NOTSET)


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _single_id(where: list) -> int | None:
    if len(where) == 1 and isinstance(where[0], list) and len(where[0]) == 3 and where[0][0] == "id" \
            and where[0][1] == "=":
        try:
            return coerce(Field("id", "Integer"), where[0][2])
        except ApiError:
            return None
    return None


def refresh_contact_names(store: Store, row: dict) -> None:
    """display_name / sort_name as CiviCRM computes them (names, else organisation/household, else email)."""
    contact_type = row.get("contact_type") or "Individual"
    first, last = (row.get("first_name") or "").strip(), (row.get("last_name") or "").strip()
    if contact_type == "Individual":
        display = " ".join(p for p in (first, last) if p)
        sort = ", ".join(p for p in (last, first) if p)
    else:
        name = row.get("organization_name") if contact_type == "Organization" else row.get("household_name")
        display = sort = name or ""
    if not display:  # no name at all: CiviCRM shows the primary email
        primary = store.primary_email_id(row["id"])
        email = store.table("Email").rows[primary].get("email") if primary is not None else None
        display = sort = email or ""
    changes = {}
    if row.get("display_name") != display:
        changes["display_name"] = display
    if row.get("sort_name") != sort:
        changes["sort_name"] = sort
    if changes:
        store.table("Contact").update(row["id"], changes)


def delete_contact_hard(store: Store, contact_id: int) -> None:
    for entity, field in (("Email", "contact_id"), ("GroupContact", "contact_id"), ("UFMatch", "contact_id"),
                          ("ActivityContact", "contact_id"), ("SubscriptionHistory", "contact_id")):
        table = store.table(entity)
        for row_id in list(table.lookup(field, contact_id)):
            table.delete(row_id)
    entity_tags = store.table("EntityTag")
    for row_id in list(entity_tags.lookup("entity_id", contact_id)):
        if entity_tags.rows[row_id].get("entity_table") == "civicrm_contact":
            entity_tags.delete(row_id)
    store.table("Contact").delete(contact_id)
    for members in store.smart_members.values():
        members.discard(contact_id)

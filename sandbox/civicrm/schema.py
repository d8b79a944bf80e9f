"""Entity and field declarations of the emulated CiviCRM, and the core option values a stock site ships.

Only the fields the pipeline and its tests touch are declared; field order follows the CiviCRM schema
because "Mandatory values missing" messages list fields in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NOTSET = object()

INTEGER, STRING, TEXT, BOOLEAN, DATETIME, ARRAY = "Integer", "String", "Text", "Boolean", "Timestamp", "Array"


@dataclass(frozen=True)
class Field:
    name: str
    data_type: str = STRING
    required: bool = False          # on create (after defaults are filled)
    default: Any = NOTSET           # create default
    get_default: Any = NOTSET       # default `get` filter (`field = value` unless the where names it)
    fk: str | None = None           # entity an Integer field points at (implicit dot joins)
    options: str | None = None      # pseudoconstant source (`:name` / `:label` suffixes)
    kind: str = "field"             # field | filter (where only) | extra (virtual) | writeonly | computed
    read_back: bool = False         # a writeonly field `get` still answers (from another table)
    indexed: bool = False           # kept in a hash index for fast `=` / `IN` lookups and joins
    title: str = ""

    @property
    def readable(self) -> bool:
        return self.kind in ("field", "extra", "computed") or self.read_back


def _f(name, data_type=STRING, **kw) -> Field:
    return Field(name, data_type, **kw)


ID = _f("id", INTEGER)

ENTITIES: dict[str, list[Field]] = {
    "Contact": [
        ID,
        _f("contact_type", default="Individual", options="contact_type"),
        _f("first_name"),
        _f("last_name"),
        _f("organization_name"),
        _f("household_name"),
        _f("display_name"),
        _f("sort_name"),
        _f("is_deleted", BOOLEAN, default=False, get_default=False),
        _f("is_deceased", BOOLEAN, default=False),
        _f("do_not_email", BOOLEAN, default=False),
        _f("is_opt_out", BOOLEAN, default=False),
        _f("preferred_language"),
        _f("groups", ARRAY, kind="filter", fk="Group", options="entity:Group"),
        _f("email_primary", INTEGER, kind="extra", fk="Email"),
    ],
    "Email": [
        ID,
        _f("contact_id", INTEGER, required=True, fk="Contact", indexed=True),
        _f("location_type_id", INTEGER, default=1, options="location_type"),
        _f("email", required=True, indexed=True),
        _f("is_primary", BOOLEAN, default=False),
        _f("is_billing", BOOLEAN, default=False),
        _f("on_hold", INTEGER, default=0, options="email_on_hold"),
        _f("is_bulkmail", BOOLEAN, default=False),
    ],
    "Group": [
        ID,
        _f("name"),
        _f("title", required=True),
        _f("description", TEXT),
        _f("saved_search_id", INTEGER),
        _f("is_active", BOOLEAN, default=True),
        _f("visibility", default="User and User Admin Only", options="group_visibility"),
        _f("group_type", ARRAY, default=[], options="og:group_type"),
        _f("parents", ARRAY, default=[], fk="Group"),
        _f("children", ARRAY, kind="computed"),
        _f("is_hidden", BOOLEAN, default=False),
        _f("is_reserved", BOOLEAN, default=False),
    ],
    "GroupContact": [
        ID,
        _f("group_id", INTEGER, required=True, fk="Group", options="entity:Group", indexed=True),
        _f("contact_id", INTEGER, required=True, fk="Contact", indexed=True),
        _f("status", default="Added", options="group_contact_status"),
        _f("location_id", INTEGER),
        _f("email_id", INTEGER, fk="Email"),
    ],
    "SubscriptionHistory": [
        ID,
        _f("contact_id", INTEGER, fk="Contact", indexed=True),
        _f("group_id", INTEGER, fk="Group", options="entity:Group"),
        _f("date", DATETIME),
        _f("method"),
        _f("status"),
        _f("tracking"),
    ],
    "Tag": [
        ID,
        _f("name", required=True),
        _f("label"),
        _f("description"),
        _f("parent_id", INTEGER, fk="Tag"),
        _f("is_selectable", BOOLEAN, default=True),
        _f("is_reserved", BOOLEAN, default=False),
        _f("is_tagset", BOOLEAN, default=False),
        _f("used_for", ARRAY, default=["civicrm_contact"], options="og:tag_used_for"),
        _f("color"),
    ],
    "EntityTag": [
        ID,
        _f("entity_table", default="civicrm_contact", options="og:tag_used_for"),
        _f("entity_id", INTEGER, required=True, indexed=True),
        _f("tag_id", INTEGER, required=True, fk="Tag", options="entity:Tag", indexed=True),
    ],
    "UFMatch": [
        ID,
        _f("domain_id", INTEGER, default=1, fk="Domain", options="entity:Domain", indexed=True),
        _f("uf_id", INTEGER, required=True, indexed=True),
        _f("uf_name", indexed=True),
        _f("contact_id", INTEGER, fk="Contact", indexed=True),
        _f("language"),
    ],
    "Activity": [
        ID,
        _f("source_record_id", INTEGER),
        _f("activity_type_id", INTEGER, required=True, options="og:activity_type"),
        _f("subject"),
        _f("activity_date_time", DATETIME),
        _f("duration", INTEGER),
        _f("location"),
        _f("details", TEXT),
        _f("status_id", INTEGER, options="og:activity_status"),
        _f("priority_id", INTEGER),
        _f("is_test", BOOLEAN, default=False, get_default=False),
        _f("is_deleted", BOOLEAN, default=False, get_default=False),
        _f("is_current_revision", BOOLEAN, default=True),
        _f("created_date", DATETIME),
        _f("modified_date", DATETIME),
        # stored as ActivityContact rows; write-only as on 5.39 and the releases after it
        _f("source_contact_id", INTEGER, required=True, kind="writeonly", fk="Contact"),
        _f("target_contact_id", ARRAY, kind="writeonly", fk="Contact", read_back=True),
        _f("assignee_contact_id", ARRAY, kind="writeonly", fk="Contact", read_back=True),
    ],
    "ActivityContact": [
        ID,
        _f("activity_id", INTEGER, required=True, fk="Activity", indexed=True),
        _f("contact_id", INTEGER, required=True, fk="Contact", indexed=True),
        _f("record_type_id", INTEGER, options="og:activity_contacts"),
    ],
    "OptionGroup": [
        ID,
        _f("name", required=True),
        _f("title"),
        _f("description"),
        _f("data_type"),
        _f("is_reserved", BOOLEAN, default=False),
        _f("is_active", BOOLEAN, default=True),
        _f("is_locked", BOOLEAN, default=False),
    ],
    "OptionValue": [
        ID,
        _f("option_group_id", INTEGER, required=True, fk="OptionGroup", options="entity:OptionGroup",
           indexed=True),
        _f("label", required=True),
        _f("value"),
        _f("name"),
        _f("grouping"),
        _f("filter", INTEGER, default=0),
        _f("is_default", BOOLEAN, default=False),
        _f("weight", INTEGER),
        _f("description", TEXT),
        _f("is_optgroup", BOOLEAN, default=False),
        _f("is_reserved", BOOLEAN, default=False),
        _f("is_active", BOOLEAN, default=True),
        _f("component_id", INTEGER),
        _f("domain_id", INTEGER),
        _f("visibility_id", INTEGER),
        _f("icon"),
        _f("color"),
    ],
    "Domain": [
        ID,
        _f("name", required=True),
        _f("description"),
        _f("version"),
    ],
}

FIELDS: dict[str, dict[str, Field]] = {e: {f.name: f for f in fs} for e, fs in ENTITIES.items()}

# Entities whose API only reads; writes are "does not exist" as on a real site.
READ_ONLY_ENTITIES = {"SubscriptionHistory", "Domain"}

WRITE_ACTIONS = ("create", "update", "save", "delete", "replace")
READ_ACTIONS = ("get", "getFields", "getActions", "checkAccess")

_COMMON_PARAMS = {"version", "checkPermissions", "debug", "chain", "language"}
ACTION_PARAMS = {
    "get": {"select", "where", "orderBy", "limit", "offset", "join", "groupBy", "having"},
    "create": {"values", "reload"},
    "update": {"values", "where", "orderBy", "limit", "reload"},
    "save": {"records", "defaults", "match", "reload"},
    "delete": {"where", "orderBy", "limit"},
    "replace": {"where", "records", "defaults", "match", "reload"},
    "getFields": {"select", "where", "orderBy", "limit", "offset", "action", "loadOptions", "values",
                  "includeCustom"},
    "getActions": {"select", "where", "orderBy", "limit", "offset"},
    "checkAccess": {"action", "values"},
}

# The CiviCRM permissions the emulator models (5.76's names), what each implies, and which calls
# need which. A permission not listed here is not modelled (every call passes it).
PERMISSION_IMPLIES = {
    "administer CiviCRM": {"access CiviCRM", "administer CiviCRM data", "administer CiviCRM system"},
    "edit all contacts": {"view all contacts", "edit my contact"},
    "view all contacts": {"view my contact"},
}
# Extra action params some entities accept (GroupContactSaveTrait, Contact::delete).
ENTITY_ACTION_PARAMS = {
    ("GroupContact", "create"): {"method", "tracking"},
    ("GroupContact", "update"): {"method", "tracking"},
    ("GroupContact", "save"): {"method", "tracking"},
    ("GroupContact", "delete"): {"method", "tracking"},
    ("Contact", "delete"): {"useTrash"},
}

ACTION_CLASSES = {
    "get": "DAOGetAction", "create": "DAOCreateAction", "update": "DAOUpdateAction",
    "save": "DAOSaveAction", "delete": "DAODeleteAction", "replace": "BasicReplaceAction",
    "getFields": "DAOGetFieldsAction", "getActions": "BasicGetActionsAction", "checkAccess": "CheckAccessAction",
}


def needed_permission(entity: str, action: str) -> str | None:
    """The modelled permission a call needs (None: none of them); `action` is the action checked."""
    writes = action in WRITE_ACTIONS
    if entity == "UFMatch" or (entity == "OptionValue" and writes):
        return "administer CiviCRM"
    if entity in ("Activity", "ActivityContact") and (writes or entity == "ActivityContact"):
        return "view all activities"
    if entity in ("Contact", "Email", "GroupContact", "EntityTag") and writes:
        return "edit all contacts"
    if entity in ("Contact", "Email") and action == "get":
        return "view all contacts"
    return None


def allowed_params(entity: str, action: str) -> set[str]:
    return _COMMON_PARAMS | ACTION_PARAMS[action] | ENTITY_ACTION_PARAMS.get((entity, action), set())


# Fixed pseudoconstant lists: (value, name, label).
FIXED_OPTIONS: dict[str, list[tuple[Any, str, str]]] = {
    "contact_type": [("Individual", "Individual", "Individual"), ("Household", "Household", "Household"),
                     ("Organization", "Organization", "Organization")],
    "group_contact_status": [("Added", "Added", "Added"), ("Removed", "Removed", "Removed"),
                             ("Pending", "Pending", "Pending")],
    "email_on_hold": [(0, "0", "No"), (1, "1", "On Hold Bounce"), (2, "2", "On Hold Opt Out")],
    "location_type": [(1, "Home", "Home"), (2, "Work", "Work"), (3, "Main", "Main"), (4, "Other", "Other"),
                      (5, "Billing", "Billing")],
    "group_visibility": [("User and User Admin Only", "User and User Admin Only", "User and User Admin Only"),
                         ("Public Pages", "Public Pages", "Public Pages")],
}

# Core option groups and values of a stock install (values, names, labels), §6.8 and §8.24.
CORE_OPTION_GROUPS: list[dict] = [
    {"id": 2, "name": "activity_type", "title": "Activity Type", "values": [
        ("1", "Meeting", "Meeting"), ("2", "Phone Call", "Phone Call"), ("3", "Email", "Email"),
        ("4", "SMS", "Outbound SMS"), ("12", "Inbound Email", "Inbound Email"),
        ("19", "Bulk Email", "Bulk Email"), ("22", "Print PDF Letter", "Print/Merge Document"),
        ("54", "Failed Payment", "Failed Payment")]},
    {"id": 25, "name": "activity_status", "title": "Activity Status", "values": [
        ("1", "Scheduled", "Scheduled"), ("2", "Completed", "Completed"), ("3", "Cancelled", "Cancelled"),
        ("4", "Left Message", "Left Message"), ("5", "Unreachable", "Unreachable"),
        ("6", "Not Required", "Not Required"), ("7", "Available", "Available"), ("8", "No_show", "No-show")]},
    {"id": 39, "name": "activity_contacts", "title": "Activity Contacts", "values": [
        ("1", "Activity Assignees", "Activity Assignees"), ("2", "Activity Source", "Activity Source"),
        ("3", "Activity Targets", "Activity Targets")]},
    {"id": 20, "name": "group_type", "title": "Group Type", "values": [
        ("1", "Access Control", "Access Control"), ("2", "Mailing List", "Mailing List")]},
    {"id": 15, "name": "tag_used_for", "title": "Tag Used For", "values": [
        ("civicrm_contact", "Contact", "Contacts"), ("civicrm_activity", "Activity", "Activities"),
        ("civicrm_case", "Case", "Cases"), ("civicrm_file", "File", "Attachments")]},
]
